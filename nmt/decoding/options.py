"""Decoding options: what a user may change about how a model translates, as one frozen
object, built and validated where the request enters (the command line, the Python API, the
HTTP API) and passed down unchanged to whatever translates.

A field left None takes the model's own setting (its checkpoint's `decode` section). Each
value is checked by the rules of that section (`nmt.config`: types, finite numbers, ranges),
so one value gets one answer on every surface; a problem names the option as the surface
spells it (`--beam-size` on the command line, `beam_size` in Python and JSON). Rules between
an option and the model's own settings (n-best within the beam) are checked when the two
meet, in `resolve`.

Sampling (`sampling`: topk:K, topp:P or random, with `temperature` and `seed`) draws one
hypothesis: it refuses a beam or an n-best above 1 given with it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from nmt.config import DEVICE, DecodeConfig, decode_option_problems, decode_problems
from nmt.errors import NmtError

Spelling = Literal["cli", "api"]

# What changes the search itself (the native HTTP API's options), then the options that are
# settings of the config's decode section too (not the device, nor how sampling draws).
SEARCH_FIELDS = ("beam_size", "n_best", "length_penalty", "min_len", "max_len_a", "max_len_b")
DECODE_FIELDS = (*SEARCH_FIELDS, "batch_tokens", "quantize", "precision")
SAMPLING_SYNTAX = "topk:K (K >= 1), topp:P (0 < P <= 1) or random"
SEED_LIMIT = 2**63


class DecodingOptionsError(NmtError):
    """One or more decoding options refused; the message names each option."""

    def __init__(self, problems: list[str]):
        super().__init__(f"invalid decoding options: {'; '.join(problems)}")
        self.problems = problems


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int | None = None
    n_best: int | None = None
    length_penalty: float | None = None  # alpha in score / length**alpha
    min_len: int | None = None
    max_len_a: float | None = None  # hypotheses have at most a * source length + b tokens
    max_len_b: int | None = None
    batch_tokens: int | None = None  # source tokens per decoded batch
    quantize: str | None = None  # none | int8 (CPU dynamic int8 linears)
    precision: str | None = None  # auto | fp32 | bf16 | fp16: the weights' precision
    sampling: str | None = None  # topk:K | topp:P | random
    temperature: float | None = None
    seed: int | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # How problems name the options; not part of what the options are.
    spelling: Spelling = field(default="api", compare=False, repr=False)

    def __post_init__(self) -> None:
        problems = self._field_problems() + self._sampling_problems()
        if problems:
            raise DecodingOptionsError(problems)

    def name(self, option: str) -> str:
        return "--" + option.replace("_", "-") if self.spelling == "cli" else option

    def given(self) -> list[str]:
        """The names of the options set (not None), but the device (where a model runs)."""
        names = [f.name for f in dataclasses.fields(self) if f.name not in ("device", "spelling")]
        return [name for name in names if getattr(self, name) is not None]

    # ------------------------------------------------------------------ validation

    def _field_problems(self) -> list[str]:
        given = {n: getattr(self, n) for n in DECODE_FIELDS if getattr(self, n) is not None}
        problems = [
            self._named(problem, DECODE_FIELDS) for problem in decode_option_problems(given)
        ]
        if not (isinstance(self.device, str) and DEVICE.matches(self.device)):
            problems.append(f"{self.name('device')} {self.device!r}: expected {DEVICE.allowed}")
        return problems

    def _named(self, problem: str, options) -> str:
        """`decode.beam_size: ...` -> `--beam-size: ...` (or `beam_size: ...`) for `options`."""
        for option in options:
            problem = problem.replace(f"decode.{option}", self.name(option))
        return problem

    def _sampling_problems(self) -> list[str]:
        if self.sampling is None:
            return [
                f"{self.name(option)} applies only with {self.name('sampling')} ({SAMPLING_SYNTAX})"
                for option in ("temperature", "seed")
                if getattr(self, option) is not None
            ]
        problems = []
        if _parse_sampling_kind(self.sampling) is None:
            problems.append(f"{self.name('sampling')} {self.sampling}: expected {SAMPLING_SYNTAX}")
        t = self.temperature
        if t is not None and not (_is_number(t) and math.isfinite(t) and t > 0):
            problems.append(f"{self.name('temperature')} {t}: expected a finite number > 0")
        s = self.seed
        if s is not None and not (type(s) is int and 0 <= s < SEED_LIMIT):
            problems.append(f"{self.name('seed')} {s}: expected an integer from 0 to 2**63 - 1")
        if (self.beam_size or 1) > 1:
            problems.append(
                f"{self.name('sampling')} draws one token per step: give "
                f"{self.name('beam_size')} 1 or leave it out (got {self.beam_size})"
            )
        if (self.n_best or 1) > 1:
            problems.append(
                f"{self.name('sampling')} gives one hypothesis per line: "
                f"{self.name('n_best')} {self.n_best} cannot apply"
            )
        return problems

    # ------------------------------------------------------------------ use

    def sampling_policy(self):
        """The sampling step policy these options ask for (`nmt.decoding.sampling.Sampling`;
        None: search). Imported here: it needs torch, the options do not."""
        from nmt.decoding.sampling import Sampling

        if self.sampling is None:
            return None
        kind, values = _parse_sampling_kind(self.sampling)
        return Sampling(kind, temperature=self.temperature or 1.0, seed=self.seed or 0, **values)

    def resolve(self, decode: DecodeConfig) -> DecodeConfig:
        """`decode` (a model's own settings) with these options applied, checked by the
        rules between settings: an n-best above the beam is refused naming which of the
        two came from the options."""
        given = {name: getattr(self, name) for name in DECODE_FIELDS}
        if self.sampling is not None:  # one drawn hypothesis, whatever the model's beam
            given |= {"beam_size": 1, "n_best": 1}
        resolved = dataclasses.replace(decode, **{k: v for k, v in given.items() if v is not None})
        given = [name for name in DECODE_FIELDS if getattr(self, name) is not None]
        problems = [self._named(problem, given) for problem in decode_problems(resolved)]
        if problems:  # named: the options given as options, the rest as the model's settings
            raise DecodingOptionsError(problems)
        return resolved


def _parse_sampling_kind(text) -> tuple[str, dict] | None:
    """`topk:40` -> ("topk", {"k": 40}); None when the text is none of the three forms."""
    if not isinstance(text, str):
        return None
    kind, _, arg = text.partition(":")
    try:
        if kind == "topk" and arg:
            k = int(arg)
            return (kind, {"k": k}) if k >= 1 else None
        if kind == "topp" and arg:
            p = float(arg)
            return (kind, {"p": p}) if 0 < p <= 1 else None
    except ValueError:
        return None
    return (kind, {}) if kind == "random" and not arg else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
