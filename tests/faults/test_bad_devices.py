"""Devices and launch environments this machine cannot use: torch device types nmt never runs
on (meta, mps, xpu), GPUs that are not there, names that are no devices, and torchrun
variables with values no launcher sets.

Each one gives one `error:` message naming the setting (train.device, --device, the
environment variable) and what is allowed, exit code 2, no traceback, nothing written.
`nmt/runtime.py` is the one place that resolves a device: train, translate and evaluate all
go through it, so one table of cases covers them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _cli import assert_clean_failure

from nmt.runtime import launch_from_environment, resolve_device

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "configs" / "tiny.yaml"
HAS_GPU = torch.cuda.is_available()


@pytest.fixture
def nmt(in_tmp, cli_inline):
    return cli_inline


# Device types torch parses but nmt's models never run on, malformed names, and the CPU with
# an index (torch accepts `cpu:1` and runs on the one CPU device: silently not what was asked).
NOT_DEVICES = ["meta", "mps", "xpu", "cpu:1", "garbage", "cuda:", "CUDA", "cuda:-1", ""]


@pytest.mark.parametrize("device", NOT_DEVICES)
def test_names_that_are_no_usable_device_are_refused_by_translate(nmt, in_tmp, device):
    """Refused before the checkpoint is even opened (it does not exist here)."""
    result = nmt("translate", "missing.pt", "--device", device)
    assert_clean_failure(result, f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize("device", ["meta", "mps", "cpu:1"])
def test_names_that_are_no_usable_device_are_refused_by_evaluate(nmt, in_tmp, device):
    (in_tmp / "src.txt").write_text("ein Hund\n", encoding="utf-8")
    (in_tmp / "ref.txt").write_text("a dog\n", encoding="utf-8")
    result = nmt(
        *("evaluate", "missing.pt", "--src", "src.txt", "--ref", "ref.txt"),
        *("--device", device),
    )
    assert_clean_failure(result, f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["ref.txt", "src.txt"]


@pytest.mark.parametrize("device", ["meta", "mps", "cpu:1", "cuda:x"])
def test_names_that_are_no_usable_device_are_refused_by_train(nmt, in_tmp, device):
    result = nmt("train", TINY_YAML, f"train.device={device}")
    assert_clean_failure(
        result, f"train.device: got {device!r} (str), expected auto, cpu, cuda or cuda:N"
    )
    assert list(in_tmp.iterdir()) == []


@pytest.mark.skipif(HAS_GPU, reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:99"])
def test_a_gpu_on_a_machine_without_one_is_refused_everywhere(nmt, in_tmp, device):
    why = "built without CUDA" if torch.version.cuda is None else "no CUDA GPU is available"
    result = nmt("translate", "missing.pt", "--device", device)
    assert_clean_failure(result, f"--device {device!r}: ", why, "use cpu or auto")
    result = nmt("train", TINY_YAML, f"train.device={device}")
    assert_clean_failure(result, f"train.device {device!r}: ", why)
    assert list(in_tmp.iterdir()) == []


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")
def test_a_gpu_index_beyond_the_machine_names_the_ones_there():
    count = torch.cuda.device_count()
    with pytest.raises(Exception, match=f"there are {count} GPUs, cuda:0 to cuda:{count - 1}"):
        resolve_device(f"cuda:{count}", key="--device")


def test_auto_is_a_gpu_where_there_is_one_else_the_cpu():
    assert resolve_device("auto").type == ("cuda" if HAS_GPU else "cpu")


# --------------------------------------------------------------------------- torchrun


BAD_LAUNCHES = {
    "WORLD_SIZE not a number": ({"WORLD_SIZE": "two"}, ["WORLD_SIZE='two': expected an integer"]),
    "WORLD_SIZE zero": ({"WORLD_SIZE": "0"}, ["WORLD_SIZE='0': expected an integer >= 1"]),
    "negative RANK": ({"WORLD_SIZE": "2", "RANK": "-1"}, ["RANK='-1': expected an integer >= 0"]),
    "RANK beyond WORLD_SIZE": (
        {"WORLD_SIZE": "2", "RANK": "2"},
        ["RANK=2 must be below WORLD_SIZE=2"],
    ),
    "LOCAL_RANK beyond LOCAL_WORLD_SIZE": (
        {"LOCAL_RANK": "4", "LOCAL_WORLD_SIZE": "2"},
        ["LOCAL_RANK=4 must be below LOCAL_WORLD_SIZE=2"],
    ),
    "a huge WORLD_SIZE": ({"WORLD_SIZE": "9" * 5000}, ["WORLD_SIZE='99999"]),
    "MASTER_PORT not a port": (
        {"WORLD_SIZE": "2", "RANK": "1", "MASTER_PORT": "70000", "MASTER_ADDR": " "},
        ["MASTER_PORT=70000 is not a port; expected 1 to 65535", "MASTER_ADDR is empty"],
    ),
    "every problem at once": (
        {"WORLD_SIZE": "x", "RANK": "y", "LOCAL_RANK": "1.5"},
        ["WORLD_SIZE='x'", "RANK='y'", "LOCAL_RANK='1.5'"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_LAUNCHES))
def test_bad_torchrun_variables_are_named_before_anything_starts(nmt, in_tmp, monkeypatch, case):
    env, fragments = BAD_LAUNCHES[case]
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = nmt("train", TINY_YAML, "train.device=cpu")
    assert_clean_failure(result, "invalid torchrun environment variables:", *fragments)
    assert len(result.stderr.splitlines()) == 1 + len(fragments)  # one line per problem
    assert list(in_tmp.iterdir()) == []


def test_a_torchrun_launch_is_read_as_launched():
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    launch = launch_from_environment({**env, "MASTER_ADDR": "n1", "MASTER_PORT": "29500"})
    assert (launch.rank, launch.world_size, launch.local_rank) == (3, 4, 1)
    assert launch_from_environment({}) == launch_from_environment({"WORLD_SIZE": "1"})


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "0", "soon"])
def test_a_distributed_timeout_that_is_no_duration_is_refused(monkeypatch, value):
    """Found broken: `inf` passed and then overflowed timedelta (a traceback)."""
    from nmt.errors import NmtError
    from nmt.runtime import dist_timeout_seconds

    monkeypatch.setenv("NMT_DIST_TIMEOUT", value)
    with pytest.raises(NmtError, match="NMT_DIST_TIMEOUT must be a positive number of seconds"):
        dist_timeout_seconds()


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")
def test_local_rank_beyond_the_gpus_of_the_node_is_named(monkeypatch):
    from nmt.errors import NmtError
    from nmt.runtime import setup_runtime

    count = torch.cuda.device_count()
    env = {"WORLD_SIZE": str(count + 1), "RANK": str(count), "LOCAL_RANK": str(count)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(NmtError, match=f"LOCAL_RANK={count} but this machine has {count} GPUs"):
        setup_runtime(device="cuda")
