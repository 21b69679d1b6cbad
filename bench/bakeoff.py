"""Bake-off: nmt against Joey NMT and eole, the same task in the same wall-clock time (issue 20).

    python bench/bakeoff.py                         # 30 min of training each: ~2 h, idle machine
    nice -n 15 python bench/bakeoff.py --minutes 2 --threads 1 --valid-every 5 --dev-lines 20 \\
        --test-lines 30 --smoke --output bench/results/bakeoff_smoke.json \\
        --plot bench/results/bakeoff_smoke.png      # every stage for all three, ~10 min

The task: Multi30k de->en from ../shared/data. `nmt prepare` (bench/bakeoff/nmt.yaml) cleans
the text and trains the joint SentencePiece model; every toolkit reads that cleaned text and
that model, its pieces converted into the toolkit's vocabulary file (`vocab_lines`). Each
toolkit is configured through its own YAML, committed in bench/bakeoff/, for the `small`
Transformer (d256, 3+3 layers, 4 heads, ffn 1024, shared and tied embeddings), batches of 2048
tokens, AdamW (0.9, 0.98), a linear warmup to 1e-3 over 400 updates then inverse square root,
label smoothing 0.1, dropout 0.1, clipping at norm 1; greedy dev BLEU on the first 500 dev
sentences every 300 updates.

The toolkits train one at a time, each for --minutes of wall clock counted from the start of
its training loop (nmt: `train.max_minutes`; Joey NMT and eole have no such setting, so this
script stops them when the time is up: SIGINT for Joey, whose best checkpoint is translated,
SIGTERM for eole, whose last step saved before the limit is translated; see STOP_SIGNAL). Each then
translates test_2016_flickr and test_2017_flickr with beam 5 by its own translate command (the
whole command is timed: loading included), and one sacreBLEU call scores every output against
the raw references.

Peers live in venvs of their own under bench/.venvs/ (never nmt's), built on first use with
nmt's torch version and the pinned versions in `PINS`. Work files go to bench/.cache/bakeoff/.
The record (bench/results/bakeoff.json) holds the machine, the CPU's vector instruction sets,
the versions, the load average before and after, and per toolkit: target tokens/s, updates,
the dev curve, test BLEU/chrF, translation sentences/s and peak memory (ru_maxrss of the
largest process of the command's tree). The chart of dev BLEU against training time goes to
--plot (docs/bakeoff_dev_bleu.png).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import record
from peers import ensure_peer_venv

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CONFIGS = BENCH / "bakeoff"
VENVS = BENCH / ".venvs"
DEFAULT_WORK = BENCH / ".cache" / "bakeoff"
DEFAULT_DATA = Path(os.environ.get("NMT_SHARED_DATA", REPO.parent / "shared" / "data"))
TOOLKITS = ("nmt", "joeynmt", "eole")
# What each peer's venv gets besides torch (nmt's version): the toolkit, pinned, and what the
# pinned release needs but does not declare (each found missing at import on 2026-12-02).
PINS = {
    # Joey NMT 2.3.0 imports importlib_metadata, and calls SentencePieceProcessor.SetVocabulary,
    # which sentencepiece 0.2.1 removed.
    "joeynmt": ("joeynmt==2.3.0", "importlib_metadata", "sentencepiece==0.2.0"),
    # eole 0.6.4's command line imports aiohttp (its load-test tool) at start-up.
    "eole": ("eole==0.6.4", "aiohttp"),
}
TEST_SPLITS = ("test_2016_flickr", "test_2017_flickr")
SRC, TGT = "de", "en"
DEV_LINES = 500  # nmt's train.valid_bleu_max_sentences: the peers validate on these lines
BEAM = 5
GRACE_S = 180  # after the stop signal: time to save a checkpoint and exit before SIGKILL


# --------------------------------------------------------------------------- vocabularies


def spm_pieces(model_path: Path) -> list[str]:
    """The SentencePiece model's pieces in id order (nmt's: <pad> <unk> <s> </s> first)."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def vocab_lines(pieces: list[str], toolkit: str) -> list[str]:
    """`pieces` as the lines of `toolkit`'s vocabulary file.

    Joey NMT (`voc_file`): one token a line; its specials (unk, pad, bos, eos, named in the
    config) come first whatever the file's order, and tokens already there are not repeated.
    eole (`src_vocab`): one token a line, optionally `token<TAB>count`; a file without counts
    keeps every line whole and its order. Both keep all pieces, so every toolkit has the same
    8000 types. A piece with whitespace would split a line: refused (SentencePiece writes
    spaces as U+2581, so none has it).
    """
    if toolkit not in ("joeynmt", "eole"):
        raise ValueError(f"no vocabulary format for {toolkit!r}")
    bad = [p for p in pieces if not p or any(c.isspace() for c in p)]
    if bad:
        raise ValueError(f"pieces with whitespace cannot be vocabulary lines: {bad[:5]}")
    if len(set(pieces)) != len(pieces):
        raise ValueError("duplicate pieces")
    return list(pieces)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# --------------------------------------------------------------------------- processes


@dataclass
class Finished:
    """A finished command: wall seconds, exit code, peak RSS and its output, time-stamped."""

    seconds: float
    returncode: int
    peak_rss_mb: float  # ru_maxrss of the largest process in its tree (Linux: KiB)
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)
    loop_started_s: float | None = None  # when the training loop began (its log line)
    interrupted_s: float | None = None  # when the stop signal was sent


def run_command(
    cmd: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    loop_start: str | None = None,
    budget_s: float | None = None,
    stop_signal: int = signal.SIGINT,
    stdin: Path | None = None,
    stdout: Path | None = None,
) -> Finished:
    """Run `cmd`, logging its output with time stamps; send `stop_signal` to its process group
    `budget_s` seconds after a line matching `loop_start` (then SIGKILL after GRACE_S). Peak
    memory from wait4."""
    started = record.now()
    out_handle = open(stdout, "w") if stdout else None  # noqa: SIM115 - closed below
    in_handle = open(stdin) if stdin else None  # noqa: SIM115
    process = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=in_handle or subprocess.DEVNULL,
        stdout=out_handle or subprocess.PIPE,
        stderr=subprocess.STDOUT if out_handle is None else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    result = Finished(seconds=0.0, returncode=-1, peak_rss_mb=0.0)
    stream = process.stdout if out_handle is None else process.stderr
    reader = threading.Thread(
        target=_read_lines, args=(stream, log_path, started, result, loop_start), daemon=True
    )
    reader.start()
    status, usage = _wait_with_budget(process, result, started, budget_s, stop_signal)
    reader.join(timeout=30)
    for handle in (out_handle, in_handle):
        if handle is not None:
            handle.close()
    result.seconds = record.now() - started
    result.returncode = os.waitstatus_to_exitcode(status)
    result.peak_rss_mb = usage.ru_maxrss / 1024
    return result


def _read_lines(stream, log_path: Path, started: float, result: Finished, loop_start):
    with open(log_path, "w") as log:
        for line in stream:
            t = record.now() - started
            result.lines.append((t, line.rstrip("\n")))
            log.write(f"{t:9.2f} {line}")
            log.flush()
            if loop_start and result.loop_started_s is None and re.search(loop_start, line):
                result.loop_started_s = t


def _wait_with_budget(
    process, result: Finished, started: float, budget_s: float | None, stop_signal: int
):
    """os.wait4 (not Popen.wait: wait4 also returns the child's resource usage)."""
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        elapsed = record.now() - started
        loop = result.loop_started_s
        due = budget_s is not None and loop is not None and elapsed - loop >= budget_s
        if due and result.interrupted_s is None:
            # To the whole group, as Ctrl-C (or `kill` of a job) in a terminal sends it.
            os.killpg(process.pid, stop_signal)
            result.interrupted_s = elapsed
        if result.interrupted_s is not None and elapsed - result.interrupted_s > GRACE_S:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.5)


# --------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class Task:
    """Where everything is: the work folder, the shared data, the prepared files."""

    work: Path
    data_root: Path
    threads: int
    test_lines: int
    valid_every: int = 0  # 0: the committed configs' 300 updates (smoke runs: fewer)
    dev_lines: int = DEV_LINES  # dev sentences for BLEU (smoke runs: fewer)

    @property
    def nmt_run(self) -> Path:
        return self.work / "nmt"

    @property
    def data(self) -> Path:
        """What the peers read: nmt's cleaned text and SentencePiece model, dev500, tests."""
        return self.work / "data"

    def test_source(self, split: str) -> Path:
        return self.data / f"{split}.{SRC}"

    def reference(self, split: str) -> Path:
        return self.data_root / "multi30k" / f"{split}.{TGT}"

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env


def nmt_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmt.cli", *args]


def prepare(task: Task) -> None:
    """nmt download + prepare, then the peers' data folder (links, dev500, test slices)."""
    corpora = task.work / "corpora"
    config = str(CONFIGS / "nmt.yaml")
    for cmd in (
        nmt_command(
            "download",
            "multi30k",
            "--langs",
            f"{SRC},{TGT}",
            "--data-dir",
            str(corpora),
            "--mirror",
            str(task.data_root),
        ),
        nmt_command("prepare", config, f"data.data_dir={corpora}", f"run_dir={task.nmt_run}"),
    ):
        subprocess.run(cmd, cwd=REPO, env=task.env(), check=True)
    prepared = task.nmt_run / "data"
    task.data.mkdir(parents=True, exist_ok=True)
    for name in ("spm.model", f"train.{SRC}", f"train.{TGT}"):
        _link(task.data / name, prepared / name)
    for lang in (SRC, TGT):
        dev = (prepared / f"val.{lang}").read_text(encoding="utf-8").splitlines()
        # The file keeps its configured name (dev500) whatever --dev-lines cut it to.
        write_lines(task.data / f"dev{DEV_LINES}.{lang}", dev[: task.dev_lines])
    for split in TEST_SPLITS:
        lines = (prepared / f"{split}.{SRC}").read_text(encoding="utf-8").splitlines()
        write_lines(task.test_source(split), lines[: task.test_lines or None])


# The keys that set how often a toolkit logs, validates and saves (--valid-every).
VALIDATION_KEYS = {
    "nmt": {"train": ("valid_every", "save_every", "log_every")},
    "joeynmt": {"training": ("validation_freq", "logging_freq")},
    # eole's save_checkpoint_steps stays at eole.yaml's 50: what is lost at the limit.
    "eole": {"training": ("valid_steps",), "": ("report_every",)},
}


def with_validation_every(config: Path, toolkit: str, updates: int) -> None:
    """Rewrite a copied config to log, validate (and save) every `updates` updates."""
    import yaml

    tree = yaml.safe_load(config.read_text())
    for section, keys in VALIDATION_KEYS[toolkit].items():
        for key in keys:
            (tree[section] if section else tree)[key] = updates
    config.write_text(yaml.safe_dump(tree, sort_keys=False))


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve())


def peer_dir(task: Task, toolkit: str) -> Path:
    """A fresh folder for a peer: its committed YAML, a link to data/, its vocabulary file."""
    folder = task.work / toolkit
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(CONFIGS / f"{toolkit}.yaml", folder / f"{toolkit}.yaml")
    if task.valid_every:
        with_validation_every(folder / f"{toolkit}.yaml", toolkit, task.valid_every)
    (folder / "data").symlink_to(task.data.resolve())
    write_lines(folder / "vocab.txt", vocab_lines(spm_pieces(task.data / "spm.model"), toolkit))
    return folder


# --------------------------------------------------------------------------- the toolkits


@dataclass
class Outcome:
    """One toolkit's results (the record's per-toolkit entry)."""

    toolkit: str
    versions: dict
    updates: int | None = None
    train_minutes: float | None = None  # training loop wall time, validation included
    tgt_tokens_per_s: float | None = None  # median of the toolkit's own log windows
    train_peak_rss_mb: float | None = None
    dev_curve: list[dict] = field(default_factory=list)  # {"update", "minutes", "bleu"}
    checkpoint: str | None = None  # what was translated
    tests: dict = field(default_factory=dict)  # split -> {"bleu", "chrf", "sent_per_s", ...}
    notes: list[str] = field(default_factory=list)


def toolkit_python(toolkit: str) -> Path:
    if toolkit == "nmt":
        return Path(sys.executable)
    return ensure_peer_venv(VENVS / toolkit, packages=PINS[toolkit])


def versions(toolkit: str, python: Path) -> dict:
    """Installed versions of the toolkit and what it computes with (from its venv)."""
    names = {"nmt": "nmt", "joeynmt": "joeynmt", "eole": "eole"}[toolkit]
    code = (
        "import json, importlib.metadata as m\n"
        f"names = [{names!r}, 'torch', 'sentencepiece', 'sacrebleu']\n"
        "found = {}\n"
        "for n in names:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: found[n] = None\n"
        "print(json.dumps(found))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    import json

    return json.loads(done.stdout)


# How a peer is stopped when its time is up (neither has a wall-clock limit of its own).
# Joey NMT saves its weights on SIGINT (Ctrl-C), as its docs say, but 2.3.0 ignored it in the
# first 30-minute bake-off (trained on unsaved until SIGKILL): what it translates is its
# best.ckpt from a validation before the limit either way, and its log reader counts nothing
# logged after the limit. eole 0.6.4 catches KeyboardInterrupt only
# around the whole run, so SIGINT did not stop it: in a 5-minute test it kept training and
# saved a checkpoint 100 s after the limit. SIGTERM ends it at once; bakeoff.py then
# translates the last step it saved completely before the limit (eole.yaml saves every 50).
STOP_SIGNAL = {"joeynmt": signal.SIGINT, "eole": signal.SIGTERM}

# How each toolkit's log says its training loop has begun: the wall-clock budget starts there.
LOOP_START = {
    "nmt": r"^training \S+: .* parameters",  # nmt counts train.max_minutes itself
    "joeynmt": r"EPOCH\s+1\b",
    "eole": r"Start training loop",
}


def train_command(toolkit: str, python: Path, task: Task, minutes: float) -> list[str]:
    if toolkit == "nmt":
        overrides = [f"run_dir={task.nmt_run}", f"train.max_minutes={minutes}"]
        for key in VALIDATION_KEYS["nmt"]["train"] if task.valid_every else ():
            overrides.append(f"train.{key}={task.valid_every}")
        if task.dev_lines != DEV_LINES:
            overrides.append(f"train.valid_bleu_max_sentences={task.dev_lines}")
        if task.threads:
            overrides.append(f"train.threads={task.threads}")
        return nmt_command("train", str(CONFIGS / "nmt.yaml"), *overrides, "--no-evaluate")
    if toolkit == "joeynmt":
        return [str(python), "-m", "joeynmt", "train", "joeynmt.yaml", "--skip-test"]
    return [str(python.parent / "eole"), "train", "--config", "eole.yaml"]


def translate_command(toolkit: str, python: Path, checkpoint: Path, src: Path, hyp: Path):
    """(command, stdin, stdout): each toolkit's own translate command with beam 5."""
    if toolkit == "nmt":
        cmd = nmt_command(
            "translate",
            str(checkpoint),
            "-i",
            str(src),
            "-o",
            str(hyp),
            "--beam-size",
            str(BEAM),
            "--device",
            "cpu",
        )
        return cmd, None, None
    if toolkit == "joeynmt":
        # beam_size and load_model from joeynmt.yaml's testing section. Translations go to
        # stdout (logs to stderr): 2.3.0's `-o FILE` fails after decoding (BaseConfig has no
        # n_best).
        return [str(python), "-m", "joeynmt", "translate", "joeynmt.yaml"], src, hyp
    cmd = [
        str(python.parent / "eole"),
        "predict",
        "--model_path",
        str(checkpoint),
        "--src",
        str(src),
        "--output",
        str(hyp),
        "--beam_size",
        str(BEAM),
        "--length_penalty",
        "avg",
        "--batch_size",
        "2048",
        "--batch_type",
        "tokens",
    ]
    return cmd, None, None


def checkpoint_to_translate(toolkit: str, task: Task, folder: Path, run: Finished) -> Path:
    """What the toolkit's users would translate with: nmt and Joey their best checkpoint by
    dev BLEU, eole the last step it saved completely before the limit (it keeps no best)."""
    if toolkit == "nmt":
        return task.nmt_run / "checkpoints" / "best.pt"
    if toolkit == "joeynmt":
        best = folder / "model" / "best.ckpt"
        return best if best.exists() else folder / "model" / "latest.ckpt"
    saved = eole_saved_steps(run)
    if not saved:
        raise RuntimeError("eole saved no checkpoint before the time limit")
    return folder / "model" / f"step_{saved[-1]}"


def eole_saved_steps(run: Finished) -> list[int]:
    """The steps eole saved completely (`Saving config and vocab` followed `Saving optimizer
    and weights to step_N`) before the stop signal: a save the signal cut short is not one."""
    saved, pending = [], None
    for t, line in run.lines:
        if run.interrupted_s is not None and t > run.interrupted_s:
            break
        if m := re.search(r"Saving optimizer and weights to step_(\d+)", line):
            pending = int(m[1])
        elif pending is not None and "Saving config and vocab" in line:
            saved.append(pending)
            pending = None
    return saved


# --------------------------------------------------------------------------- reading the logs


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def read_nmt_training(run: Finished, run_dir: Path, outcome: Outcome) -> None:
    """nmt: tgt tokens/s from metrics.jsonl (per log window, validation excluded); the dev
    curve from its log's `validation at update N: ... bleu B` lines, on the same clock as
    the peers' (when the line appeared: metrics.jsonl's elapsed_s leaves the validation's
    own time out)."""
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    outcome.tgt_tokens_per_s = _median([r["tgt_tokens_per_s"] for r in train])
    for t, line in run.lines:
        if m := re.search(r"validation at update (\d+):.*\bbleu ([\d.]+)", line):
            outcome.dev_curve.append({"update": int(m[1]), **_on_loop_clock(run, t, float(m[2]))})
    stopped = _last_match(run, r"training stopped at update (\d+)")
    if stopped:
        outcome.updates = int(stopped[1][1])
        outcome.train_minutes = _loop_minutes(run, stopped[0])


def read_joey_training(run: Finished, outcome: Outcome) -> None:
    """Joey NMT's log: `Step: N ... Tokens per Sec: X` (target tokens, validation excluded)
    every logging_freq updates, `Evaluation result (greedy) ... bleu: B` after validations."""
    rates, step = [], 0
    for t, line in run.lines:
        if m := re.search(r"Interrupt at epoch \d+, step (\d+)", line):
            step = int(m[1])  # Joey's answer to the signal: the update it was in
            break
        if run.interrupted_s is not None and t > run.interrupted_s:
            # Joey 2.3.0 does not always stop on SIGINT: in the first 30-minute run it
            # trained on, without saving, until SIGKILL. Those updates do not count.
            break
        if m := re.search(r"Step:\s+(\d+),.*Tokens per Sec:\s+([\d.]+)", line):
            step, rate = int(m[1]), float(m[2])
            rates.append(rate)
        elif m := re.search(r"Evaluation result \(greedy\).*?bleu:\s+([\d.]+)", line):
            outcome.dev_curve.append({"update": step, **_on_loop_clock(run, t, float(m[1]))})
    outcome.tgt_tokens_per_s = _median(rates)
    outcome.updates = step
    outcome.train_minutes = _loop_minutes(run, run.interrupted_s)


def read_eole_training(run: Finished, outcome: Outcome) -> None:
    """eole's log: `Step N/M; ... S/T tok/s; ...` every report_every updates (source and
    target tokens per second) and `validation BLEU: B` after validations."""
    rates, step = [], 0
    for t, line in run.lines:
        if run.interrupted_s is not None and t > run.interrupted_s:
            break  # nothing after the limit counts (SIGTERM makes this rare)
        if m := re.search(r"Step\s+(\d+)/\s*\d+;.*?(\d+)/\s*(\d+) tok/s", line):
            step = int(m[1])
            rates.append(float(m[3]))
        elif m := re.search(r"validation BLEU: ([\d.]+)", line):
            outcome.dev_curve.append({"update": step, **_on_loop_clock(run, t, float(m[1]))})
    outcome.tgt_tokens_per_s = _median(rates)
    outcome.updates = step
    outcome.train_minutes = _loop_minutes(run, run.interrupted_s)


def reread_training(toolkit: str, log_path: Path, minutes: float, outcome: Outcome) -> None:
    """A peer's training fields again, from its time-stamped log (`--reread`): for a record
    made before a reader was fixed. The stop signal went out `minutes` after the loop began
    (within the 0.5 s of `_wait_with_budget`'s poll)."""
    lines = []
    for raw in log_path.read_text(encoding="utf-8").splitlines():
        stamp, _, line = raw.strip().partition(" ")
        lines.append((float(stamp), line))
    loop = next((t for t, line in lines if re.search(LOOP_START[toolkit], line)), None)
    run = Finished(seconds=lines[-1][0] if lines else 0.0, returncode=0, peak_rss_mb=0.0)
    run.lines, run.loop_started_s = lines, loop
    run.interrupted_s = None if loop is None else loop + minutes * 60
    outcome.dev_curve = []
    {"joeynmt": read_joey_training, "eole": read_eole_training}[toolkit](run, outcome)


def reread_record(path: Path, work: Path) -> dict:
    """Recompute the peers' training fields of the record at `path` from the logs in
    `work`/logs with today's readers; everything else (test scores, speeds, memory) stays.
    Returns the rewritten record."""
    import json

    result = json.loads(path.read_text())
    minutes = result["settings"]["minutes"]
    for entry in result["toolkits"]:
        if entry["toolkit"] == "nmt":
            continue
        outcome = Outcome(**entry)
        reread_training(
            entry["toolkit"], work / "logs" / f"{entry['toolkit']}.train.log", minutes, outcome
        )
        entry.update(asdict(outcome))
    result["reread"] = (
        "the peers' training fields (updates, tokens/s, dev curve, minutes) were recomputed "
        f"from the logs by `python bench/bakeoff.py --reread` at {record.machine()['date']}"
    )
    record.write(result, path)
    return result


def _last_match(run: Finished, pattern: str) -> tuple[float, re.Match] | None:
    found = None
    for t, line in run.lines:
        if m := re.search(pattern, line):
            found = (t, m)
    return found


def _on_loop_clock(run: Finished, t: float, bleu: float) -> dict:
    return {"minutes": (t - (run.loop_started_s or 0.0)) / 60, "bleu": bleu}


def _loop_minutes(run: Finished, end_s: float | None) -> float | None:
    if run.loop_started_s is None:
        return None
    end = end_s if end_s is not None else (run.lines[-1][0] if run.lines else run.seconds)
    return (end - run.loop_started_s) / 60


# --------------------------------------------------------------------------- scoring


def score(hyp: Path, ref: Path) -> dict:
    """The one sacreBLEU call for every toolkit: cased BLEU (13a) and chrF against the raw
    references (their first len(hyp) lines when --test-lines cut the test set)."""
    import sacrebleu

    hyps = hyp.read_text(encoding="utf-8").splitlines()
    refs = ref.read_text(encoding="utf-8").splitlines()[: len(hyps)]
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    return {
        "bleu": bleu.corpus_score(hyps, [refs]).score,
        "chrf": chrf.corpus_score(hyps, [refs]).score,
        "signature": str(bleu.get_signature()),
        "lines": len(hyps),
    }


# --------------------------------------------------------------------------- the report

# What a toolkit cannot do, said in the table rather than left out (checked in 2.3.0 / 0.6.4).
CAPABILITIES = {
    "training stops at a wall-clock limit": {
        "nmt": "yes (train.max_minutes)",
        "joeynmt": "no: SIGINT; steps logged after the limit not counted",
        "eole": "no: SIGTERM; last step saved before it (every 50)",
    },
    "checkpoint translated": {
        "nmt": "best.pt (dev BLEU)",
        "joeynmt": "best.ckpt (dev BLEU)",
        "eole": "last step saved before the limit (no best kept)",
    },
    "length penalty of beam 5": {
        "nmt": "score / len",
        "joeynmt": "GNMT ((5 + len) / 6) (no score / len)",
        "eole": "score / len (avg)",
    },
    "Adam epsilon": {"nmt": "1e-9", "joeynmt": "1e-8 (not settable)", "eole": "1e-9"},
    "translation into a file": {
        "nmt": "yes (-o)",
        "joeynmt": "no: 2.3.0's -o fails; stdout",
        "eole": "yes (--output)",
    },
}


def results_table(outcomes: list[dict]) -> str:
    """The record's toolkits as a Markdown table (one row each); '-' where nothing was
    measured, and the capability rows where a toolkit cannot do the same."""
    columns = [
        ("updates", lambda o: _fmt(o["updates"], "{:d}")),
        ("training min", lambda o: _fmt(o["train_minutes"], "{:.1f}")),
        ("tgt tok/s", lambda o: _fmt(o["tgt_tokens_per_s"], "{:.0f}")),
        ("best dev BLEU", lambda o: _fmt(_best_dev(o), "{:.2f}")),
        *[
            (f"{split} BLEU", lambda o, s=split: _fmt(o["tests"].get(s, {}).get("bleu"), "{:.2f}"))
            for split in TEST_SPLITS
        ],
        ("translate sent/s", lambda o: _fmt(_translate_rate(o), "{:.1f}")),
        ("peak MB train / translate", _memory_cell),
    ]
    header = "| toolkit | " + " | ".join(name for name, _ in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [
        f"| {o['toolkit']} | " + " | ".join(cell(o) for _, cell in columns) + " |" for o in outcomes
    ]
    names = [o["toolkit"] for o in outcomes]
    features = ["", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    features += [
        f"| {what} | " + " | ".join(per.get(n, "-") for n in names) + " |"
        for what, per in CAPABILITIES.items()
    ]
    return "\n".join([header, rule, *rows, *features])


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _best_dev(outcome: dict) -> float | None:
    scores = [point["bleu"] for point in outcome["dev_curve"]]
    return max(scores) if scores else None


def _translate_rate(outcome: dict) -> float | None:
    """Sentences per second over both test sets, whole commands (loading included)."""
    tests = [t for t in outcome["tests"].values() if t.get("seconds")]
    if not tests:
        return None
    return sum(t["lines"] for t in tests) / sum(t["seconds"] for t in tests)


def _memory_cell(outcome: dict) -> str:
    translate = [t["peak_rss_mb"] for t in outcome["tests"].values() if "peak_rss_mb" in t]
    return (
        f"{_fmt(outcome['train_peak_rss_mb'], '{:.0f}')} / "
        f"{_fmt(max(translate) if translate else None, '{:.0f}')}"
    )


def plot_dev_curves(
    outcomes: list[dict], path: Path, *, title: str, dev_lines: int = DEV_LINES
) -> None:
    """Dev BLEU against minutes of training, one line per toolkit, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for outcome in outcomes:
        curve = outcome["dev_curve"]
        if curve:
            axes.plot(
                [p["minutes"] for p in curve],
                [p["bleu"] for p in curve],
                marker="o",
                label=outcome["toolkit"],
            )
    axes.set_xlabel("training wall time (minutes, validation included)")
    axes.set_ylabel(f"dev BLEU (greedy, first {dev_lines} sentences)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------- the run


def run_toolkit(toolkit: str, task: Task, minutes: float) -> Outcome:
    """Train `toolkit` for `minutes`, translate both test sets with beam 5, score them."""
    python = toolkit_python(toolkit)
    outcome = Outcome(toolkit=toolkit, versions=versions(toolkit, python))
    if toolkit == "nmt":
        folder = task.nmt_run
        for stale in ("checkpoints", "metrics.jsonl", "logs"):  # a fresh run, never a resume
            path = folder / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        cwd = REPO
    else:
        folder = cwd = peer_dir(task, toolkit)
    logs = task.work / "logs"
    logs.mkdir(exist_ok=True)
    print(f"[{toolkit}] training for {minutes:g} min", file=sys.stderr, flush=True)
    run = run_command(
        train_command(toolkit, python, task, minutes),
        cwd=cwd,
        env=task.env(),
        log_path=logs / f"{toolkit}.train.log",
        loop_start=LOOP_START[toolkit],
        budget_s=None if toolkit == "nmt" else minutes * 60,
        stop_signal=STOP_SIGNAL.get(toolkit, signal.SIGINT),
    )
    outcome.train_peak_rss_mb = run.peak_rss_mb
    if toolkit == "nmt":
        read_nmt_training(run, folder, outcome)
    elif toolkit == "joeynmt":
        read_joey_training(run, outcome)
    else:
        read_eole_training(run, outcome)
    if run.returncode != 0 and run.interrupted_s is None:
        outcome.notes.append(f"training exited with code {run.returncode}; see its log")
    checkpoint = checkpoint_to_translate(toolkit, task, folder, run)
    outcome.checkpoint = str(checkpoint.relative_to(task.work))
    for split in TEST_SPLITS:
        outcome.tests[split] = translate_and_score(toolkit, python, checkpoint, task, split, cwd)
    return outcome


def run_toolkit_or_say_why(toolkit: str, task: Task, minutes: float) -> Outcome:
    """run_toolkit, or an outcome whose note says what failed (install, training, ...): the
    table then shows the toolkit with what it could not do, and the others still run."""
    try:
        return run_toolkit(toolkit, task, minutes)
    except Exception as exc:  # noqa: BLE001 - recorded, reported in the table's notes
        print(f"[{toolkit}] failed: {exc!r}", file=sys.stderr, flush=True)
        return Outcome(toolkit=toolkit, versions={}, notes=[f"failed: {exc!r}"[:2000]])


def translate_and_score(
    toolkit: str, python: Path, checkpoint: Path, task: Task, split: str, cwd: Path
) -> dict:
    hyp = task.work / "hyp" / f"{toolkit}.{split}.{TGT}"
    hyp.parent.mkdir(exist_ok=True)
    hyp.unlink(missing_ok=True)
    cmd, stdin, stdout = translate_command(
        toolkit, python, checkpoint, task.test_source(split), hyp
    )
    print(f"[{toolkit}] translating {split}", file=sys.stderr, flush=True)
    done = run_command(
        cmd,
        cwd=cwd,
        env=task.env(),
        stdin=stdin,
        stdout=stdout,
        log_path=task.work / "logs" / f"{toolkit}.{split}.log",
    )
    result = {
        "seconds": done.seconds,
        "peak_rss_mb": done.peak_rss_mb,
        "returncode": done.returncode,
    }
    sources = len(task.test_source(split).read_text(encoding="utf-8").splitlines())
    if done.returncode != 0 or not hyp.exists():
        return result | {"error": f"exit code {done.returncode}; see logs/{toolkit}.{split}.log"}
    scores = score(hyp, task.reference(split))
    if scores["lines"] != sources:
        result["error"] = f"{scores['lines']} output lines for {sources} inputs"
    return result | scores | {"sent_per_s": sources / done.seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall clock each")
    parser.add_argument("--toolkits", nargs="+", choices=TOOLKITS, default=list(TOOLKITS))
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS for every toolkit (0: torch's default)",
    )
    parser.add_argument(
        "--test-lines",
        type=int,
        default=0,
        help="translate only the first N lines of each test set (0: all)",
    )
    parser.add_argument(
        "--valid-every",
        type=int,
        default=0,
        help="log, validate and save every N updates (0: the configs' 300)",
    )
    parser.add_argument(
        "--dev-lines",
        type=int,
        default=DEV_LINES,
        help=f"dev sentences for dev BLEU (default {DEV_LINES})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="mark the record as a smoke run of the harness, not the bake-off",
    )
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--output", type=Path, default=record.RESULTS / "bakeoff.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "bakeoff_dev_bleu.png")
    parser.add_argument(
        "--reread",
        action="store_true",
        help="run nothing: recompute the peers' training fields of --output from the logs in "
        "--work, then redraw --plot and print the table",
    )
    args = parser.parse_args(argv)
    if args.reread:
        finish(reread_record(args.output, args.work), args.plot)
        return

    task = Task(
        args.work.resolve(),
        args.data_root.resolve(),
        args.threads,
        args.test_lines,
        args.valid_every,
        args.dev_lines,
    )
    task.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = record.now()
    prepare(task)
    outcomes = [asdict(run_toolkit_or_say_why(name, task, args.minutes)) for name in args.toolkits]
    result = {
        "benchmark": "bakeoff",
        "smoke": args.smoke,
        "machine": record.machine() | {"cpu_flags": record.cpu_flags()},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_minutes": (record.now() - started) / 60,
        "settings": {
            "minutes": args.minutes,
            "threads": args.threads or "torch default",
            "test_lines": args.test_lines or "all",
            "valid_every": args.valid_every or "as configured (300)",
            "beam": BEAM,
            "dev_lines": args.dev_lines,
            "configs": {name: f"bench/bakeoff/{name}.yaml" for name in args.toolkits},
            "pins": {name: list(PINS[name]) for name in args.toolkits if name in PINS},
        },
        "toolkits": outcomes,
    }
    record.write(result, args.output)
    finish(result, args.plot)
    print(f"wrote {args.output} and {args.plot}")


def finish(result: dict, plot: Path) -> None:
    """The chart and the table of a record."""
    settings, outcomes = result["settings"], result["toolkits"]
    machine = result["machine"]
    cpu = f"{machine['cpu']} ({machine['isa']})" if "isa" in machine else machine["cpu"]
    cores = machine.get("cpu_count")
    title = f"Multi30k de-en, {settings['minutes']:g} min each, {cpu}, {cores} cores"
    if result["smoke"]:
        title = "SMOKE RUN, loaded machine: " + title
    plot_dev_curves(outcomes, plot, title=title, dev_lines=settings["dev_lines"])
    print(results_table(outcomes))


if __name__ == "__main__":
    main()
