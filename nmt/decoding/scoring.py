"""`nmt score`: the log-probability of given translations under a model (forced decoding).

Each pair runs through the model's teacher-forcing `forward`, the code path of training, with
its conventions (`nmt.data.batching.collate`): the source gains EOS, the decoder input is BOS +
target, the labels are target + EOS. A translation's score is the one search reports for it
(`nmt.decoding.search`, module docstring): the tokens y_1 .. y_L followed by EOS,

    log_prob = sum_{i=1}^{L+1} log p(y_i | y_<i, x)      tokens = L + 1 (EOS counts)

and the mean is log_prob / tokens. Both sides are normalised as translate and prepare
normalise text; a source longer than decode.max_input_tokens is truncated as translate
truncates it. One output row per input pair, always.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmt.data.batching import ListSequences, collate, make_inference_batches
from nmt.data.clean import normalize
from nmt.data.text import read_lines
from nmt.data.tokenizer import PAD_ID
from nmt.decoding.backend import TranslationBackend
from nmt.errors import DataError


@dataclass(frozen=True)
class PairScore:
    """One given translation's log-probability under the model."""

    log_prob: float  # sum of the token log-probs, EOS included
    tokens: list[float]  # the per-token log-probs, EOS last

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def mean(self) -> float:
        return self.log_prob / self.length

    def row(self, *, per_token: bool) -> str:
        """`sum<TAB>mean<TAB>count`, then the per-token values separated by spaces."""
        cells = [f"{self.log_prob:.6f}", f"{self.mean:.6f}", str(self.length)]
        if per_token:
            cells.append(" ".join(f"{value:.6f}" for value in self.tokens))
        return "\t".join(cells)


def score_pairs(translator, sources: Sequence[str], targets: Sequence[str]) -> list[PairScore]:
    """The score of each target line as a translation of its source line, in input order.

    `translator` is nmt's `nmt.decoding.engine.Engine` (its model, tokenizer,
    device, batch_tokens and max_input_tokens are used; its search settings are not).
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    tokenizer = translator.tokenizer
    src_ids = tokenizer.encode_src([normalize(line) for line in sources])
    tgt_ids = tokenizer.encode_tgt([normalize(line) for line in targets])
    limit = translator.max_input_tokens
    src_ids = [ids[:limit] for ids in src_ids]
    return score_pair_ids(translator, src_ids, tgt_ids)


def score_pair_ids(
    translator, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]
) -> list[PairScore]:
    """Scores of id lists (without BOS/EOS), batch by batch, in input order."""
    _check_target_lengths(targets, max_positions=translator.model.cfg.max_positions)
    scores: list[PairScore | None] = [None] * len(sources)
    if not sources:
        return []
    src, tgt = ListSequences(sources), ListSequences(targets)
    widths = np.fromiter((max(len(s), len(t)) for s, t in zip(sources, targets)), dtype=np.int64)
    model = translator.model
    model.eval()
    with torch.inference_mode(), translator.autocast():
        for indices in make_inference_batches(widths, max_tokens=translator.batch_tokens):
            batch = collate(src, tgt, indices).to(translator.device)
            for index, score in zip(batch.indices.tolist(), _forced(model, batch)):
                scores[index] = score
    return scores  # type: ignore[return-value]


def _forced(model, batch) -> list[PairScore]:
    """Teacher forcing on one batch: the log-prob of every label. -> one PairScore per row."""
    logits = model(batch.src_ids, batch.tgt_in)  # [B, T, V]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(2, batch.tgt_out[:, :, None])[:, :, 0]  # [B, T]
    lengths = batch.tgt_out.ne(PAD_ID).sum(dim=1).tolist()
    rows = picked.cpu().tolist()
    return [
        PairScore(log_prob=float(sum(row[:n])), tokens=row[:n]) for row, n in zip(rows, lengths)
    ]


def _check_target_lengths(targets: Sequence[Sequence[int]], *, max_positions: int) -> None:
    """A target the decoder's position table cannot hold (BOS + pieces) is refused by line."""
    for line, ids in enumerate(targets, start=1):
        if len(ids) + 1 > max_positions:
            raise DataError(
                f"--tgt line {line} has {len(ids)} pieces; the model scores at most "
                f"{max_positions - 1} (model.max_positions {max_positions})"
            )


def score_command(
    load: Callable[[], TranslationBackend], *, src: Path, tgt: Path, output: str, per_token: bool
) -> int:
    """Read both files, refuse a line-count mismatch before `load()` loads the model, score,
    write the rows atomically (`nmt.decoding.stream.open_output`). Returns the number of rows."""
    from nmt.decoding.stream import open_output

    if output != "-" and Path(output).is_dir():
        raise DataError(f"--output {output} is a directory; give a file name")
    if str(src) == str(tgt) == "-":
        raise DataError("--src and --tgt cannot both be stdin (-); give one of them as a file")
    sources, targets = read_lines(src), read_lines(tgt)
    if len(sources) != len(targets):
        raise DataError(
            f"--src {src} has {len(sources)} lines but --tgt {tgt} has {len(targets)}; "
            "give one translation per source line"
        )
    scores = score_pairs(load(), sources, targets)
    with open_output(output) as out:
        for score in scores:
            out.write(score.row(per_token=per_token) + "\n")
    return len(scores)
