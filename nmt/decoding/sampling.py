"""Sampling as a step policy of greedy search: draw the next token instead of taking the best.

`--sampling topk:K | topp:P | random`, `--temperature T`, `--seed N`. At every step the model's
log-probs (after the length rules of `nmt.decoding.search` masked what may not follow) are
divided by T, truncated (top-k: the K most likely tokens; top-p: the fewest most likely tokens
whose probability reaches P, nucleus sampling), renormalised, and one token is drawn with a
generator seeded by N. A hypothesis keeps the model's own log-prob of each drawn token
(temperature and truncation change what is drawn, not how it is scored), so `--n-best 1`
rows and `nmt score` report the same number (for text that re-encodes to the same pieces).
One generator serves a whole run, batch after batch: the same seed gives the same output for
the same input batched the same way (batch_tokens, chunk_lines); a batch drawn in another
order or company draws other numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Sampling:
    """How to draw a token: kind "topk" (keep `k`), "topp" (keep mass `p`) or "random";
    the values are checked where they enter (`nmt.decoding.options`)."""

    kind: str = "random"
    k: int = 0
    p: float = 1.0
    temperature: float = 1.0
    seed: int = 0

    def generator(self, device: torch.device) -> torch.Generator:
        """A generator on `device` seeded with `seed`: one per translation run."""
        return torch.Generator(device=device).manual_seed(self.seed)

    def distribution(self, log_probs: Tensor) -> Tensor:
        """What a row's token is drawn from. log_probs [N, V] -> probabilities [N, V].

        Any finite temperature > 0 works: each row's best token is shifted to 0 before the
        division and the temperature is kept within the dtype's normal range, so a tiny one
        gives 0 and -inf (the best tokens only), a huge one 0 for every allowed token (a
        uniform draw), never NaN; tokens the length rules banned stay -inf."""
        allowed = log_probs.isfinite()
        best = log_probs.max(dim=-1, keepdim=True).values
        best = best.masked_fill(~best.isfinite(), 0.0)
        info = torch.finfo(log_probs.dtype)
        temperature = min(max(self.temperature, info.tiny), info.max)
        logits = torch.where(allowed, (log_probs - best) / temperature, float("-inf"))
        if self.kind == "topk":
            logits = _keep_top_k(logits, self.k)
        elif self.kind == "topp":
            logits = _keep_top_p(logits, self.p)
        # A row with nothing allowed (only at its forced last step) draws its first column;
        # the length limit ends it, with the -inf log-prob it had.
        dead = ~logits.isfinite().any(dim=-1)
        logits[dead, 0] = 0.0
        return torch.softmax(logits, dim=-1)

    def pick(self, log_probs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The step policy: (model log-prob of the drawn token [N], drawn token [N])."""
        probs = self.distribution(log_probs)
        tokens = torch.multinomial(probs, 1, generator=generator)  # [N, 1]
        return log_probs.gather(1, tokens)[:, 0], tokens[:, 0]


def _keep_top_k(logits: Tensor, k: int) -> Tensor:
    """-inf outside each row's k largest values (ties at the k-th all stay). [N, V]."""
    k = min(k, logits.size(-1))
    kth = logits.topk(k, dim=-1).values[:, -1:]  # [N, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def _keep_top_p(logits: Tensor, p: float) -> Tensor:
    """-inf outside each row's nucleus: the most likely tokens, in order, until their
    probability reaches p (the token that crosses p is kept). [N, V]."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= p
    drop_sorted[:, 0] = False  # the most likely token always stays (p below float precision)
    drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
