"""`nmt translate` as users run it: a subprocess on a trained checkpoint, files and pipes.

The contract: exactly one output line per input line (empty in -> empty out, over-long in ->
truncated with a warning, never dropped), results on stdout or the output file and nothing
else there, the speed summary and warnings on stderr, and one `error: ...` line for bad input.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from nmt.decoding.options import DecodeOptions

REPO = Path(__file__).resolve().parents[2]

LONG = " ".join(["Hund"] * 2000)  # > decode.max_input_tokens (1000) pieces
EDGE_LINES = [
    "Ein Mann fährt auf einem Fahrrad.",
    "",
    "   \t  ",
    LONG,
    "一只猫坐在垫子上。",  # script never seen in training (byte fallback)
    "😀🎉🐕",
    "Zwei Hunde\u2028spielen im\x0cSchnee\u0085.",  # separators str.splitlines splits on
    "Eine Frau liest ein Buch.\r",  # a CRLF line ending
    "",
]
EMPTY = {1, 2, 8}


def lines_of(text: str) -> list[str]:
    """Split output on "\\n" only, as the writer does; every line must end with one."""
    assert text.endswith("\n"), repr(text[-50:])
    return text[:-1].split("\n")


@pytest.fixture(scope="module")
def edge_run(tiny_run, nmt_cli, tmp_path_factory):
    """Translate EDGE_LINES file -> file once; several tests read the result."""
    work = tmp_path_factory.mktemp("translate")
    (work / "in.de").write_text("\n".join(EDGE_LINES) + "\n", encoding="utf-8")
    result = nmt_cli(
        "translate", tiny_run.checkpoint, "--input", "in.de", "--output", "out.en", cwd=work
    )
    assert result.returncode == 0, result.stderr
    return result, (work / "out.en").read_text(encoding="utf-8")


def test_file_output_has_one_line_per_input_line(edge_run):
    _, text = edge_run
    out = lines_of(text)
    assert len(out) == len(EDGE_LINES)
    assert "\r" not in text
    for i, line in enumerate(out):
        if i in EMPTY:
            assert line == "", (i, line)
        elif i in (0, 3):
            assert line.strip(), (i, line)


def test_overlong_line_is_truncated_with_a_warning_never_dropped(edge_run):
    result, text = edge_run
    assert lines_of(text)[3].strip()
    assert re.search(r"warning: 1 input lines? (was|were) longer than .*truncated", result.stderr)


def test_summary_goes_to_stderr_and_nothing_to_stdout(edge_run):
    result, _ = edge_run
    assert result.stdout == ""
    assert f"translated {len(EDGE_LINES)} lines" in result.stderr
    assert f"{len(EMPTY)} empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_stdin_to_stdout_gives_the_file_translation(edge_run, tiny_run, nmt_cli, tmp_path):
    text = "".join(line + "\n" for line in EDGE_LINES)
    result = nmt_cli(
        "translate",
        tiny_run.checkpoint,
        *("--input", "-", "--output", "-"),
        *("--chunk-lines", "3"),  # several chunks, each flushed as whole lines
        cwd=tmp_path,
        input=text.encode("utf-8"),
    )
    assert result.returncode == 0, result.stderr
    assert lines_of(result.stdout.decode("utf-8")) == lines_of(edge_run[1])
    stderr = result.stderr.decode("utf-8")
    assert f"translated {len(EDGE_LINES)} lines" in stderr
    assert "warning: 1 input lines were longer" in stderr


def test_nbest_rows_are_indexed_and_sorted(tiny_run, nmt_cli, tmp_path):
    from nmt.decoding.engine import Engine

    lines = ["Ein Mann schläft.", "", "Zwei Hunde spielen im Schnee.", "Eine Frau liest."]
    (tmp_path / "in.de").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = nmt_cli(
        "translate",
        tiny_run.checkpoint,
        *("-i", "in.de", "-o", "nbest.tsv", "--n-best", "2", "--beam-size", "3"),
        *("--chunk-lines", "3"),  # indices must continue across chunks
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = [row.split("\t") for row in lines_of((tmp_path / "nbest.tsv").read_text("utf-8"))]
    assert all(len(row) == 3 for row in rows), rows
    assert [int(row[0]) for row in rows] == [i for i in range(len(lines)) for _ in range(2)]
    scores = [float(row[1]) for row in rows]
    for i in range(len(lines)):
        assert scores[2 * i] >= scores[2 * i + 1]
    assert rows[2] == rows[3] == ["1", "0.0000", ""]  # the empty input
    # The first row of each index is the 1-best of the same beam, with its score.
    best = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(beam_size=3)).translate(lines)
    assert [row[2] for row in rows[::2]] == best.best
    for i, nbest in enumerate(best.hypotheses):
        if nbest:
            assert scores[2 * i] == pytest.approx(nbest[0].score, abs=1e-4)
    assert result.stdout == ""


BAD_INPUT = {  # CKPT stands for the trained checkpoint
    "missing checkpoint": (["missing.pt", "-i", "ok.de"], ["checkpoint not found: missing.pt"]),
    "config as checkpoint": (["tiny.yaml", "-i", "ok.de"], ["tiny.yaml is not a checkpoint"]),
    "truncated checkpoint": (["cut.pt", "-i", "ok.de"], ["cut.pt is truncated or corrupt"]),
    "invalid UTF-8": (["CKPT", "-i", "bad.de"], ["bad.de: line 2 is not valid UTF-8"]),
    "n-best over beam": (
        ["CKPT", "-i", "ok.de", "--n-best", "3", "--beam-size", "2"],
        ["invalid decoding options: --n-best (3) must be <= --beam-size (2)"],
    ),
    # Decoding options follow the config's rules (found broken: nan was accepted).
    "NaN length penalty": (
        ["CKPT", "-i", "ok.de", "--length-penalty", "nan"],
        ["invalid decoding options: --length-penalty: got nan (float), expected a finite number"],
    ),
    "infinite length penalty": (
        ["CKPT", "-i", "ok.de", "--length-penalty", "inf"],
        ["--length-penalty: got inf (float), expected a finite number"],
    ),
    "negative length penalty": (
        ["CKPT", "-i", "ok.de", "--length-penalty", "-0.5"],
        ["--length-penalty: -0.5 is out of range; allowed >= 0"],
    ),
    "a beam no machine searches": (
        ["CKPT", "-i", "ok.de", "--beam-size", "100000"],
        ["--beam-size: 100000 is out of range; allowed >= 1 and <= 1024"],
    ),
    "unknown device": (
        ["CKPT", "-i", "ok.de", "--device", "banana"],
        ["device 'banana': expected auto, cpu, cuda or cuda:N"],
    ),
    "absent GPU": (["CKPT", "-i", "ok.de", "--device", "cuda:99"], ["device 'cuda:99'"]),
    "output is a directory": (["CKPT", "-i", "ok.de", "-o", "adir"], ["--output adir is a dir"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gives_one_clear_message(
    case, tiny_run, nmt_inline, assert_clean_failure, tmp_path
):
    (tmp_path / "ok.de").write_text("Ein Hund.\n", encoding="utf-8")
    (tmp_path / "bad.de").write_bytes(b"Ein Hund.\n\xc3\x28 kaputt\nZwei.\n")
    shutil.copy(REPO / "configs" / "tiny.yaml", tmp_path / "tiny.yaml")
    data = tiny_run.checkpoint.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "adir").mkdir()
    args, fragments = BAD_INPUT[case]
    args = [str(tiny_run.checkpoint) if a == "CKPT" else a for a in args]
    if "-o" not in args:
        args += ["-o", "out.en"]
    assert_clean_failure(nmt_inline("translate", *args, cwd=tmp_path), *fragments)
    # Nothing half-written is left behind: no output file, no temporary file.
    assert [p.name for p in tmp_path.iterdir() if "out.en" in p.name] == []
    assert list((tmp_path / "adir").iterdir()) == []


def test_a_config_given_as_checkpoint_fails_cleanly_in_a_real_process(
    nmt_cli, assert_clean_failure, tmp_path
):
    """The same message from `python -m nmt.cli`: exit code 2, no traceback."""
    (tmp_path / "in.de").write_text("Ein Hund.\n", encoding="utf-8")
    config = REPO / "configs" / "tiny.yaml"
    result = nmt_cli("translate", config, "--input", "in.de", cwd=tmp_path)
    assert_clean_failure(result, f"{config} is not a checkpoint")
    assert result.returncode == 2 and result.stdout == ""
