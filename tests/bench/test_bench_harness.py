"""The benchmark harness's own logic, against known answers (no peers, no timing claims)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import corpus  # noqa: E402
import models  # noqa: E402
import peers  # noqa: E402
import record  # noqa: E402
from decode_speed import nmt_runner  # noqa: E402


@pytest.mark.parametrize("beam", [1, 5])
def test_forced_length_gives_exactly_length_steps_and_tokens(beam):
    # Random weights never choose EOS on purpose: the settings alone must fix the length.
    model = models.build_nmt("small", vocab_size=50, seed=3).eval()
    rows = corpus.with_eos([[5, 6, 7, 8], [9, 10], [11, 12, 13]])
    run = nmt_runner(model, [corpus.pad(rows)], beam=beam, length=7)
    out = run(count_steps=True)
    assert out["lengths"] == [7, 7, 7]
    assert out["steps"] == [7]


def test_matmul_parameters_match_a_hand_count():
    d, f, layers, vocab = 256, 1024, 3, 100  # the small preset
    model = models.build_nmt("small", vocab_size=vocab, seed=1)
    encoder_layer = 4 * d * d + 2 * d * f  # qkv + out, two ffn matrices
    decoder_tgt = 4 * d * d + 2 * d * d + 2 * d * f  # self qkv+out, cross q+out, ffn
    cross_kv = 2 * d * d
    assert models.matmul_parameters(model) == {
        "src": layers * (encoder_layer + cross_kv),
        "tgt": layers * decoder_tgt + vocab * d,
    }
    flops = models.training_flops({"src": 10, "tgt": 100}, src_tokens=3, tgt_tokens=2)
    assert flops == 6 * (10 * 3 + 100 * 2)


def test_rates_and_summary():
    assert record.summary([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "runs": [3.0, 1.0, 2.0],
    }
    assert record.rates(10, [2.0, 5.0, 1.0])["median"] == 5.0
    lines = record.table(["system", "sent/s"], [["nmt", 12.345], ["hf", 0.5]]).splitlines()
    assert lines[0] == "system  sent/s"
    assert lines[2:] == ["nmt      12.35", "hf       0.500"]


def test_peer_worker_round_trip_and_errors(tmp_path):
    # The protocol alone, served by this venv's Python: replies on stdout survive stray prints.
    script = tmp_path / "echo_peer.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(BENCH)!r})
        from peers import serve

        def add(*, a, b):
            print("noise on stdout")
            return {{"sum": a + b}}

        def fail():
            raise ValueError("broken on purpose")

        serve({{"add": add, "fail": fail}})
    """)
    )
    with peers.PeerWorker(script, python=Path(sys.executable)) as worker:
        assert worker.call("add", a=2, b=3) == {"sum": 5}
        with pytest.raises(peers.PeerError, match="broken on purpose"):
            worker.call("fail")
        assert worker.call("add", a=1, b=1) == {"sum": 2}


def test_torch_requirement_drops_the_local_label():
    assert peers.torch_requirement() == f"torch=={torch.__version__.split('+')[0]}"


def test_peer_allocator_settings_spell_out_nmts():
    """peers.py runs without nmt, so it restates nmt.memory's settings: they must agree."""
    import nmt.memory

    assert peers.THP_VARIABLE == nmt.memory.THP_VARIABLE
    assert peers.KEEP_FREED_MEMORY_ENV == nmt.memory.KEEP_FREED_MEMORY_ENV
    assert peers.peer_allocator_env(False) == {nmt.memory.THP_VARIABLE: "0"}
    control = peers.peer_allocator_env(True)
    assert control == {nmt.memory.THP_VARIABLE: "0", **nmt.memory.KEEP_FREED_MEMORY_ENV}


def test_a_gpu_run_uses_the_peers_only_from_a_given_interpreter(tmp_path):
    """No peer venv is built on a GPU machine (no registry); a missing interpreter is a
    recorded reason, not a crash; --no-peers wins."""
    peer, why = peers.open_marian_peer(device="cuda")
    assert peer is None and "--peers-python" in why
    peer, why = peers.open_marian_peer(disabled="--no-peers", python=Path(sys.executable))
    assert (peer, why) == (None, "--no-peers")
    peer, why = peers.open_marian_peer(python=tmp_path / "no-such-python", device="cuda")
    assert peer is None and "no-such-python" in why


def test_ct2_compute_types_that_cannot_load_are_left_out_with_their_reason(monkeypatch):
    import decode_speed
    from decode_speed import prepare_peer

    monkeypatch.setattr(decode_speed, "gpu_precision", lambda device: "bf16")  # no GPU here

    class FakePeer:  # CTranslate2 built for another CUDA: float16 loads, bfloat16 does not
        def call(self, op, **args):
            if op == "build":
                return {"parameters": 7, "device": args["device"], "dtype": args["dtype"]}
            if op == "ct2_load" and args["compute_type"] == "bfloat16":
                raise peers.PeerError(
                    "marian_peer.py ct2_load failed:\nTraceback ...\nValueError: no"
                )
            return {}

    args = type("Args", (), {"vocab": 10, "seed": 1, "threads": 2})()
    spm = Path("spm.model")
    built, loaded, skipped = prepare_peer(
        FakePeer(), "small", args=args, spm_path=spm, device=torch.device("cuda")
    )
    assert built["dtype"] == "bfloat16" and built["device"] == "cuda"
    assert (loaded, skipped) == (["float16"], {"bfloat16": "ValueError: no"})
    built, loaded, skipped = prepare_peer(
        FakePeer(), "small", args=args, spm_path=spm, device=torch.device("cpu")
    )
    assert built["dtype"] == "float32" and loaded == ["float32", "int8"] and skipped == {}


def test_a_relative_peers_python_is_taken_from_where_the_benchmark_was_started():
    # The worker runs in bench/; the path must still name this interpreter (a venv's link).
    import os

    relative = Path(os.path.relpath(sys.executable))
    peer, why = peers.open_marian_peer(python=relative)
    assert why is None and peer is not None
    try:
        assert peer.python == relative.absolute()
        assert peer.process.poll() is None  # running, waiting for requests
    finally:
        peer.__exit__(None, None, None)


def test_train_speed_counts_what_a_trainer_keeps_between_updates():
    """On a GPU the other trainers' share is left out of a system's peak by this count:
    weights, gradients, AdamW's two moments and step, and the batches."""
    import numpy as np
    from train_speed import NmtTrainer

    from nmt.data.batching import Batch

    model = models.build_nmt("small", vocab_size=40, seed=1, d_model=16, ffn_dim=32)
    ids = torch.tensor([[5, 6, 7, 3], [8, 9, 3, 0]])
    batch = Batch(ids, ids, ids, np.arange(2), num_src_tokens=7, num_tgt_tokens=7)
    trainer = NmtTrainer(model, [batch], device=torch.device("cpu"), lr=1e-3, compile_model=False)
    trainer.update(trainer.batches[0])
    params = list(trainer.model.parameters())
    weights = sum(p.numel() * 4 for p in params)
    # weights + gradients + exp_avg + exp_avg_sq, one float32 step per tensor, 3 id tensors
    expected = 4 * weights + 4 * len(params) + 3 * ids.numel() * 8
    assert trainer._resident_bytes() == expected
