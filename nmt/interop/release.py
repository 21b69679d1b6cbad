"""`nmt export --to nmt`: a release checkpoint, what decoding needs and nothing else.

Kept: format_version, nmt_version, config, spm, vocab, model (optionally float16 weights,
half the file; translate/evaluate widen them back to float32 on load, and a GPU's bf16/fp16
decoding casts them again as usual). Dropped: optimizer, scheduler, scaler, RNG states and
the training progress, which only resuming a run reads. A `release` entry records the
update the weights come from and whether they were stored in float16.
"""

from __future__ import annotations

from pathlib import Path

from nmt.checkpoint import checkpoint_step
from nmt.interop.source import ExportSource

KEPT = ("config", "spm", "vocab", "fingerprint", "model")


def release_state(source: ExportSource, *, fp16: bool) -> dict:
    """The checkpoint's decoding keys; float weights in float16 when `fp16`."""
    state = {key: source.checkpoint[key] for key in KEPT if key in source.checkpoint}
    state["model"] = {
        name: tensor.half() if fp16 and tensor.is_floating_point() else tensor
        for name, tensor in source.checkpoint["model"].items()
    }
    state["release"] = {"from_step": checkpoint_step(source.checkpoint), "fp16": fp16}
    return state


def export_release(source: ExportSource, out: Path, *, fp16: bool) -> None:
    """Write the release checkpoint `out` (atomically, as every checkpoint)."""
    from nmt.checkpoint import save_checkpoint

    save_checkpoint(Path(out), release_state(source, fp16=fp16))
