"""float32 inference on the CPU: linear layers whose weights oneDNN lays out once.

A float32 `nn.Linear` on the CPU calls MKL's sgemm, which copies the weight into its kernel's
blocked layout at every call. Decoding multiplies few rows per call (batch x beam, e.g. 80)
by large weights, so that copy is a large share of the work: `perf` put MKL's packing routine
(`sgemm_scopy_right16`) at 19% of the cycles of `base` beam-5 decoding, beside 38% in the
product kernel itself. oneDNN can lay a weight out once
(`torch.ops.mkldnn._reorder_linear_weight`) and reuse it at every call
(`torch.ops.mkldnn._linear_pointwise`, which can also apply a ReLU in the same pass): the ops
torch.compile's inductor emits for frozen CPU linears, used here without compiling anything.

The packed model is for inference only (no autograd, float32 inputs, no autocast). Results
equal `nn.Linear`'s up to float rounding (the summation order differs); the test suite checks
logits and beams against the unpacked model. Where this torch build has no oneDNN the model
is returned unchanged: packing is a speed-up, never a requirement.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt.model.layers import FeedForward


class PackedLinear(nn.Module):
    """y = activation(x W^T + b) for x [..., in] -> [..., out], W packed once by oneDNN."""

    def __init__(self, linear: nn.Linear, *, relu: bool = False) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # No batch-size hint: rows vary (encoder B*S, decoder b*k), and oneDNN's default
        # layout measured as fast as one tuned for the decoder's 80 rows.
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight))
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)
        self.attr = "relu" if relu else "none"

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.attr, [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.attr}"


def packing_available() -> bool:
    """Whether this torch build has oneDNN and the packed-linear ops."""
    ops = ("_reorder_linear_weight", "_linear_pointwise")
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, op) for op in ops)


def pack_linears(model: nn.Module) -> nn.Module:
    """`model` (float32, on the CPU, in eval mode) with every nn.Linear packed, in place.

    A feed-forward block with ReLU gets its ReLU fused into its first linear. Returns `model`
    unchanged where packing is unavailable.
    """
    if not packing_available():
        return model
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, FeedForward) and isinstance(module.activation, nn.ReLU):
            module.fc1 = PackedLinear(module.fc1, relu=True)
            module.activation = nn.Identity()
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, PackedLinear(child))
    return model
