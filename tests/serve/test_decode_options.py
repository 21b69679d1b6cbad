"""One value, one answer: each decoding limit is accepted or refused the same way, with the
same message, by every surface that offers it: `nmt translate`, `nmt evaluate`, `nmt score`,
`nmt serve` (its startup options and the native HTTP API) and the Python API.

The messages differ only in how each surface spells an option (`--beam-size` on the command
line, `beam_size` in Python and JSON); everything else is `nmt.decoding.options`' one text.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _server import Server, start_server

pytest.importorskip("fastapi", reason="nmt serve needs the serve extra")
httpx = pytest.importorskip("httpx")

LINES = ["Ein Hund rennt.", "Zwei Männer spielen Fußball."]

# (option, value, accepted); n_best 99 is above the model's beam (a rule between settings).
CASES = [
    ("beam_size", 0, False),
    ("beam_size", 1025, False),
    ("beam_size", 3, True),
    ("n_best", 0, False),
    ("n_best", 99, False),
    ("n_best", 1, True),
    ("batch_tokens", 0, False),
    ("batch_tokens", 1 << 30, False),
    ("batch_tokens", 64, True),
    ("length_penalty", -1.0, False),
    ("length_penalty", math.nan, False),
    ("length_penalty", 0.5, True),
    ("min_len", -1, False),
    ("min_len", 2, True),
    ("max_len_a", -0.5, False),
    ("max_len_a", 0.5, True),
    ("max_len_b", -1, False),
    ("max_len_b", 3, True),
    ("sampling", "topk:0", False),
    ("sampling", "topk:3", True),
    ("temperature", 0.5, False),  # without --sampling
]
# What each surface offers.
SEARCH = {"beam_size", "n_best", "length_penalty", "min_len", "max_len_a", "max_len_b"}
SURFACES = {
    "translate": SEARCH | {"batch_tokens", "sampling", "temperature"},
    "evaluate": SEARCH - {"n_best"} | {"batch_tokens", "sampling", "temperature"},
    "score": {"batch_tokens"},
    "serve": SEARCH - {"n_best"},  # startup options: refusals only (no server starts)
    "http": SEARCH,
    "python": SEARCH | {"batch_tokens", "sampling", "temperature"},
}


def flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def plain(message: str) -> str:
    """A message as the Python API and HTTP spell options."""
    for option in {o for o, _, _ in CASES}:
        message = message.replace(flag(option), option)
    return message.removeprefix("error: ").strip()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("options")
    (folder / "in.de").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    (folder / "ref.en").write_text("A dog runs.\nTwo men play football.\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def http(serve_checkpoint: Path, tmp_path_factory) -> Server:
    server = start_server(serve_checkpoint, tmp_path_factory.mktemp("http") / "serve.log")
    yield server
    assert server.stop() == 0, server.log()


def through_cli(surface, cli_inline, checkpoint, files, option, value):
    args = [flag(option), value]
    if surface == "translate":
        command = ["translate", checkpoint, "-i", files / "in.de", "-o", files / "out.en"]
    elif surface == "evaluate":
        command = ["evaluate", checkpoint, "--src", files / "in.de", "--ref", files / "ref.en"]
        command += ["-o", files / "eval"]
    elif surface == "score":
        command = ["score", checkpoint, "--src", files / "in.de", "--tgt", files / "ref.en"]
    else:
        command = ["serve", checkpoint, "--port", "1"]  # refused before binding, or never run
    result = cli_inline(*command, *args)
    return result.returncode == 0, plain(result.stderr)


def through_http(http, option, value):
    response = httpx.post(f"{http.url}/v1/translate", json={"lines": LINES, option: value})
    return response.status_code == 200, response.json().get("error", "")


def through_python(checkpoint, option, value):
    from nmt import Translator
    from nmt.errors import NmtError

    try:
        Translator.from_checkpoint(checkpoint, device="cpu", **{option: value}).translate(LINES)
    except NmtError as exc:
        return False, str(exc)
    return True, ""


@pytest.mark.slow
def test_each_limit_gets_one_answer_everywhere(serve_checkpoint, http, files, cli_inline):
    disagreements = []
    for option, value, accepted in CASES:
        answers = {}
        for surface, offered in SURFACES.items():
            if option not in offered or (surface == "serve" and accepted):
                continue
            if surface == "http":
                if isinstance(value, float) and math.isnan(value):
                    continue  # JSON has no NaN (tests/serve/test_server.py sends it raw)
                answers[surface] = through_http(http, option, value)
            elif surface == "python":
                answers[surface] = through_python(serve_checkpoint, option, value)
            else:
                answers[surface] = through_cli(
                    surface, cli_inline, serve_checkpoint, files, option, value
                )
        verdicts = {surface: ok for surface, (ok, _) in answers.items()}
        messages = {message for ok, message in answers.values() if not ok}
        if set(verdicts.values()) != {accepted} or len(messages) > (0 if accepted else 1):
            disagreements.append((option, value, answers))
        if not accepted:
            (message,) = messages
            assert message.startswith("invalid decoding options: "), message
            assert option in message, message
    assert disagreements == []
