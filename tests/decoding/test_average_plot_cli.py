"""`nmt average` and `nmt plot` on the run directory of a real (tiny) training run."""

from __future__ import annotations

import pytest
import torch

from nmt.checkpoint import load_checkpoint
from nmt.decoding.engine import Engine
from nmt.training.checkpoints import average_checkpoints

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LINES = ["Ein Mann fährt Fahrrad.", "", "Zwei Hunde spielen im Schnee."]


def assert_translates(checkpoint) -> None:
    best = Engine.from_checkpoint(checkpoint).translate(LINES).best
    assert len(best) == 3 and best[1] == "" and best[0] and best[2]


def float_weights(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(path)["model"].items() if v.is_floating_point()}


def test_average_of_two_checkpoints_is_their_mean_and_translates(tiny_run, nmt_cli, tmp_path):
    first, second = tiny_run.step_checkpoints
    result = nmt_cli("average", first, second, "-o", tmp_path / "avg.pt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "averaged 2 checkpoints" in result.stdout and "step_50.pt, step_100.pt" in result.stdout
    averaged = load_checkpoint(tmp_path / "avg.pt")
    assert averaged["averaged_from"] == [str(first), str(second)]
    assert "optimizer" not in averaged and averaged["config"] == load_checkpoint(first)["config"]
    a, b, mean = float_weights(first), float_weights(second), float_weights(tmp_path / "avg.pt")
    assert mean.keys() == a.keys()
    for name, value in mean.items():
        expected = ((a[name].double() + b[name].double()) / 2).to(value.dtype)
        assert torch.equal(value, expected), name
    assert any(not torch.equal(a[n], b[n]) for n in a)  # the two really differ
    assert_translates(tmp_path / "avg.pt")


def test_average_last_two_of_a_run_dir(tiny_run, nmt_inline, tmp_path):
    result = nmt_inline(
        "average", "--last", "2", "--run-dir", tiny_run.run_dir, "-o", "last2.pt", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    averaged = load_checkpoint(tmp_path / "last2.pt")
    assert averaged["averaged_from"] == [str(p) for p in tiny_run.step_checkpoints[-2:]]
    assert_translates(tmp_path / "last2.pt")


def test_a_checkpoint_averaged_with_itself_is_unchanged(tiny_run, tmp_path):
    path = tiny_run.checkpoint
    copy = tmp_path / "copy.pt"  # a copy: one file given twice is refused
    copy.write_bytes(path.read_bytes())
    averaged = average_checkpoints([path, copy])["model"]
    original = load_checkpoint(path)["model"]
    assert averaged.keys() == original.keys()
    for name, value in original.items():
        assert torch.equal(averaged[name], value), name
        assert averaged[name].dtype == value.dtype


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--last", "2"], ["--last needs --run-dir"]),
        ([], ["give checkpoints to average"]),
        (["--last", "2", "--run-dir", "nowhere"], ["no step checkpoints in nowhere"]),
        (["missing.pt"], ["checkpoint not found: missing.pt"]),
    ],
)
def test_average_bad_input(args, fragments, nmt_inline, assert_clean_failure, tmp_path):
    result = nmt_inline("average", *args, "-o", "out.pt", cwd=tmp_path)
    assert_clean_failure(result, *fragments)
    assert not (tmp_path / "out.pt").exists()


def test_plot_writes_a_png_into_the_run_dir(tiny_run, nmt_cli, tmp_path):
    result = nmt_cli("plot", tiny_run.run_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    png = tiny_run.run_dir / "curves.png"
    assert result.stdout.strip() == f"wrote {png}"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert not list(tiny_run.run_dir.glob(".*.tmp*"))  # written atomically


def test_plot_of_a_dir_without_metrics_is_a_clear_error(nmt_inline, assert_clean_failure, tmp_path):
    (tmp_path / "not_a_run").mkdir()
    result = nmt_inline("plot", "not_a_run", cwd=tmp_path)
    assert_clean_failure(result, "no metrics.jsonl in not_a_run")
    assert list((tmp_path / "not_a_run").iterdir()) == []


def test_plot_writes_the_format_its_name_asks_for_and_refuses_others(
    tiny_run, nmt_inline, assert_clean_failure, tmp_path
):
    """Found broken: `-o curves.pdf` (or `.svg`, `.xyz`) wrote PNG bytes under that name."""
    for name, magic in (("c.pdf", b"%PDF"), ("c.svg", b"<?xml")):
        result = nmt_inline("plot", tiny_run.run_dir, "-o", name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / name).read_bytes().startswith(magic)
    result = nmt_inline("plot", tiny_run.run_dir, "-o", "c.xyz", cwd=tmp_path)
    assert_clean_failure(result, "--output c.xyz", ".png, .pdf, .svg")
    assert not (tmp_path / "c.xyz").exists()
