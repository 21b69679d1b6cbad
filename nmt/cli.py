"""The `nmt` command line. Each command is a thin wrapper: load config, call one stage, print.

Stage modules are imported inside the commands so `nmt --help` stays fast and never imports
`datasets` (which GPU machines may lack) or torch.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from nmt.errors import NmtError
from nmt.memory import configure_cpu_memory

# Before any command imports torch: torch reads THP_MEM_ALLOC_ENABLE once, at its first
# CPU allocation.
configure_cpu_memory()

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Neural machine translation: download -> prepare -> train -> translate -> evaluate.",
)


def _print_version(value: bool) -> None:
    if value:
        from nmt import __version__

        typer.echo(f"nmt {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Neural machine translation: download -> prepare -> train -> translate -> evaluate."""


def fail(message: str, code: int = 2) -> None:
    """Print one clear message to stderr and exit non-zero (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(command=None, *, stdout_is_output: bool = False):
    """Turn NmtError, OSError (and Ctrl-C) into a one-line message and a non-zero exit code.

    A closed log pipe never stops a command (`nmt train 2>&1 | head`: the stream goes to
    /dev/null and training goes on); only a command whose job is writing stdout
    (`stdout_is_output`: `nmt translate | head`) ends there, successfully.
    """
    if command is None:
        return functools.partial(user_errors, stdout_is_output=stdout_is_output)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from nmt.files import fill_closed_standard_descriptors, keep_going_on_closed_pipes

        fill_closed_standard_descriptors(stdout_is_output=stdout_is_output)
        keep_going_on_closed_pipes(stdout=not stdout_is_output)
        try:
            return command(*args, **kwargs)
        except NmtError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:
            sys.stderr.close()  # e.g. `nmt translate ... | head`: not an error
            raise typer.Exit(0) from None
        except OSError as exc:
            # What the system refused that no check above foresaw (a name too long for the
            # file system, a permission): the file and the reason, not a traceback.
            fail(os_error_line(exc), 1)

    return wrapper


def os_error_line(exc: OSError) -> str:
    """`FILE: reason` for an OSError (`reason` alone when it names no file)."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename is not None else reason


ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML config.", show_default=False)]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Dotted overrides, e.g. train.lr=5e-4 model.preset=tiny.", show_default=False
    ),
]


InitFromOption = Annotated[
    Path | None,
    typer.Option(
        "--init-from",
        help="Start a new run from this checkpoint's weights, architecture and tokenizer "
        "(the same as train.init_from=CHECKPOINT).",
        show_default=False,
    ),
]


def load(config: Path, overrides: list[str] | None, init_from: Path | None = None):
    from nmt.config import load_config

    overrides = list(overrides or [])
    if init_from is not None:  # as a JSON string, which YAML reads back verbatim
        overrides.append(f"train.init_from={json.dumps(str(init_from))}")
    return load_config(config, overrides)


# --------------------------------------------------------------------------- download


@app.command()
@user_errors
def download(
    corpus: Annotated[
        str,
        typer.Argument(
            help="multi30k, wmt_newstest, hf:<dataset>[:<config>], or a new name with --src/--tgt."
        ),
    ],
    langs: Annotated[
        str | None, typer.Option(help="Comma-separated languages (default: all the corpus has).")
    ] = None,
    pair: Annotated[
        str | None, typer.Option(help="Language pair such as de-en (same as --langs de,en).")
    ] = None,
    split: Annotated[
        list[str] | None, typer.Option(help="Split to fetch (repeatable; default: all).")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="Where corpora are written.")] = Path("data"),
    mirror: Annotated[
        Path | None,
        typer.Option(help="Offline mirror <dir>/<corpus>/<split>.<lang> (env NMT_DATA_MIRROR)."),
    ] = None,
    src: Annotated[
        Path | None, typer.Option(help="Register a user source file (plain or .gz).")
    ] = None,
    tgt: Annotated[
        Path | None, typer.Option(help="Register a user target file (plain or .gz).")
    ] = None,
    src_lang: Annotated[str, typer.Option(help="Language of --src.")] = "src",
    tgt_lang: Annotated[str, typer.Option(help="Language of --tgt.")] = "tgt",
) -> None:
    """Fetch a parallel corpus into DATA_DIR/CORPUS/<split>.<lang> with a manifest."""
    from nmt.data import download as dl
    from nmt.data.corpora import get_corpus

    if (src is None) != (tgt is None):
        fail("give both --src and --tgt to register user files")
    if src is not None:
        result = dl.register_files(
            corpus,
            src=src,
            tgt=tgt,
            src_lang=src_lang,
            tgt_lang=tgt_lang,
            split=(split or ["train"])[0],
            data_dir=data_dir,
        )
    else:
        languages = _languages(langs, pair) or get_corpus(corpus).languages
        result = dl.download(
            corpus, languages=languages, splits=split, data_dir=data_dir, mirror=mirror
        )
    state = "already present" if result.skipped else "written"
    typer.echo(f"{corpus}: {len(result.files)} files {state} in {result.directory}")
    for name, entry in sorted(result.files.items()):
        typer.echo(f"  {name:<28} {entry['lines']:>9} lines  {entry['source']}")


def _languages(langs: str | None, pair: str | None) -> list[str]:
    if langs and pair:
        fail("give --langs or --pair, not both")
    text = langs or (pair.replace("-", ",") if pair else "")
    return [lang.strip() for lang in text.split(",") if lang.strip()]


# --------------------------------------------------------------------------- prepare


@app.command()
@user_errors
def prepare(
    config: ConfigArg,
    overrides: OverridesArg = None,
    force: Annotated[
        bool, typer.Option(help="Redo the work even if inputs are unchanged.")
    ] = False,
    init_from: InitFromOption = None,
) -> None:
    """Clean the corpus, train SentencePiece (or reuse --init-from's) and binarize every split."""
    from nmt.config import write_resolved_config
    from nmt.data.prepare import existing_checkpoints
    from nmt.data.prepare import prepare as run_prepare
    from nmt.files import command_line, run_lock
    from nmt.pipeline import init_from_tokenizer
    from nmt.report import print_prepare_summary

    cfg = load(config, overrides, init_from)
    with run_lock(cfg.run_path, command=command_line()):
        result = run_prepare(cfg, force=force, reused=init_from_tokenizer(cfg))
        if result.orphaned_checkpoints:
            typer.echo(
                f"warning: replaced the prepared data of {cfg.run_path}: the run must restart; "
                f"its {len(result.orphaned_checkpoints)} checkpoints in "
                f"{result.orphaned_checkpoints[0].parent} can no longer be resumed (nmt train "
                "refuses them): delete them, or train in a fresh run directory",
                err=True,
            )
        if not existing_checkpoints(cfg):  # else config.yaml stays what the checkpoints ran
            write_resolved_config(cfg)
    print_prepare_summary(result)


# --------------------------------------------------------------------------- train


@app.command()
@user_errors
def train(
    config: ConfigArg,
    overrides: OverridesArg = None,
    evaluate_at_end: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="Score data.test_splits at the end.")
    ] = True,
    init_from: InitFromOption = None,
) -> None:
    """Train (or resume: re-running continues from the run directory's last checkpoint).

    Multi-GPU / multi-node: `torchrun --nproc-per-node N -m nmt.cli train CONFIG`.
    """
    from nmt.files import command_line, run_lock_if
    from nmt.pipeline import (
        check_decode_precision,
        check_scoring,
        evaluate_test_splits,
        final_checkpoint,
    )
    from nmt.runtime import peer_failures_reported, setup_runtime, teardown_runtime
    from nmt.training.trainer import Trainer

    cfg = load(config, overrides, init_from)
    t = cfg.train
    runtime = setup_runtime(device=t.device, precision=t.precision, threads=t.threads)
    try:
        check_scoring(cfg, evaluate_at_end=evaluate_at_end)
        if evaluate_at_end:  # refused now, not after training
            check_decode_precision(cfg, runtime.device)
        # One lock per run, taken by the process that writes it (rank 0 of a DDP run).
        with run_lock_if(runtime.is_main, cfg.run_path, command=command_line()):
            with peer_failures_reported(runtime):
                Trainer(cfg, runtime).fit()
            if evaluate_at_end and runtime.is_main:
                evaluate_test_splits(cfg, final_checkpoint(cfg), device=str(runtime.device))
    finally:
        teardown_runtime(runtime)


# --------------------------------------------------------------------------- run


@app.command()
@user_errors
def run(
    config: ConfigArg, overrides: OverridesArg = None, init_from: InitFromOption = None
) -> None:
    """The whole pipeline: download if missing, prepare, train, average, evaluate."""
    from nmt.config import write_resolved_config
    from nmt.data.prepare import existing_checkpoints
    from nmt.data.prepare import prepare as run_prepare
    from nmt.files import command_line, run_lock
    from nmt.pipeline import (
        check_decode_precision,
        check_extras,
        check_scoring,
        ensure_downloaded,
        evaluate_test_splits,
        final_checkpoint,
        init_from_tokenizer,
    )
    from nmt.report import print_prepare_summary
    from nmt.runtime import peer_failures_reported, setup_runtime, teardown_runtime
    from nmt.training.trainer import Trainer

    cfg = load(config, overrides, init_from)
    check_scoring(cfg, evaluate_at_end=True)  # refused now, not after training
    check_extras(cfg)  # refused now, not after downloading and preparing
    with run_lock(cfg.run_path, command=command_line()):  # the whole pipeline, not per stage
        ensure_downloaded(cfg)
        print_prepare_summary(run_prepare(cfg, reused=init_from_tokenizer(cfg)))
        if not existing_checkpoints(cfg):  # else the trainer writes it once resume is checked
            write_resolved_config(cfg)
        t = cfg.train
        runtime = setup_runtime(device=t.device, precision=t.precision, threads=t.threads)
        try:
            check_decode_precision(cfg, runtime.device)  # refused now, not after training
            with peer_failures_reported(runtime):
                Trainer(cfg, runtime).fit()
            results = evaluate_test_splits(cfg, final_checkpoint(cfg), device=str(runtime.device))
        finally:
            teardown_runtime(runtime)
    for r in results:
        typer.echo(
            f"{r.split}: BLEU {r.scores['bleu'].score:.2f} "
            f"(lowercased {r.lowercase['bleu'].score:.2f}) chrF {r.scores['chrf'].score:.2f}  "
            f"[{r.scores['bleu'].signature}]"
        )


# --------------------------------------------------------------------------- translate

QuantizeOption = Annotated[
    str | None,
    typer.Option(
        help="none or int8 (dynamic int8 linears, CPU only; default: the checkpoint's "
        "decode.quantize)."
    ),
]

DeviceOption = Annotated[
    str, typer.Option(help="auto (a GPU if there is one, else the CPU), cpu, cuda or cuda:N.")
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        help="auto, fp32, bf16 or fp16: the weights' precision; bf16 and fp16 need a GPU, where "
        "auto picks bf16 (default: the checkpoint's decode.precision)."
    ),
]


# Decoding options that translate and evaluate share (defined once, so they cannot drift).
BeamSizeOption = Annotated[
    int | None,
    typer.Option(min=1, help="Beam size (default: the checkpoint's decode.beam_size)."),
]
LengthPenaltyOption = Annotated[
    float | None,
    typer.Option(help="alpha in score / length**alpha (default: the checkpoint's)."),
]
BatchTokensOption = Annotated[
    int | None,
    typer.Option(min=1, help="Source tokens per batch (default: the checkpoint's)."),
]
SamplingOption = Annotated[
    str | None,
    typer.Option(
        help="Draw each token instead of searching: topk:K, topp:P (nucleus) or random "
        "(beam 1, one hypothesis per line)."
    ),
]
TemperatureOption = Annotated[
    float | None,
    typer.Option(help="With --sampling: divide the log-probs by T before drawing (default 1)."),
]
SeedOption = Annotated[
    int | None, typer.Option(help="With --sampling: the random seed (default 0).")
]
PrefixFileOption = Annotated[
    str | None,
    typer.Option(
        help="Target prefixes, one line per input line (may be empty): each translation "
        "starts with its prefix and search continues from there."
    ),
]


@app.command()
@user_errors(stdout_is_output=True)
def translate(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(
            help="A checkpoint written by nmt train, or an `nmt export --to ctranslate2` dir; "
            "several checkpoints decode as an ensemble (the mean of their log-probs).",
            metavar="CHECKPOINT",
            show_default=False,
        ),
    ],
    input: Annotated[str, typer.Option("--input", "-i", help="Input file, or - for stdin.")] = "-",
    output: Annotated[
        str, typer.Option("--output", "-o", help="Output file, or - for stdout.")
    ] = "-",
    beam_size: BeamSizeOption = None,
    n_best: Annotated[
        int | None,
        typer.Option(min=1, help="Write N hypotheses per line as index<TAB>score<TAB>text."),
    ] = None,
    length_penalty: LengthPenaltyOption = None,
    batch_tokens: BatchTokensOption = None,
    device: DeviceOption = "auto",
    chunk_lines: Annotated[
        int, typer.Option(min=1, help="Lines read and translated at a time.")
    ] = 2000,
    quantize: QuantizeOption = None,
    precision: PrecisionOption = None,
    sampling: SamplingOption = None,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
    prefix_file: PrefixFileOption = None,
    print_alignment: Annotated[
        bool,
        typer.Option(
            help="End each line (or n-best row) with <TAB> and the hard alignment of the "
            "last decoder layer's cross-attention, fairseq's 0-0 1-2 ... (source-target "
            "piece indices); one checkpoint only."
        ),
    ] = False,
) -> None:
    """Translate text line by line: exactly one output line per input line."""
    from nmt.decoding.sampling import parse_sampling
    from nmt.decoding.stream import translate_stream

    translate_stream(
        checkpoints,
        input,
        output,
        device=device,
        chunk_lines=chunk_lines,
        beam_size=beam_size,
        n_best=n_best,
        length_penalty=length_penalty,
        batch_tokens=batch_tokens,
        quantize=quantize,
        precision=precision,
        sampling=parse_sampling(sampling, temperature=temperature, seed=seed),
        prefix_file=prefix_file,
        print_alignment=print_alignment,
    )


# --------------------------------------------------------------------------- score


@app.command()
@user_errors(stdout_is_output=True)
def score(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by nmt train.")],
    src: Annotated[Path, typer.Option(help="Source lines (- for stdin).")],
    tgt: Annotated[Path, typer.Option(help="Their translations, one per source line.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Scores file, or - for stdout.")
    ] = "-",
    per_token: Annotated[
        bool, typer.Option(help="Add a column with each token's log-prob (EOS last).")
    ] = False,
    batch_tokens: BatchTokensOption = None,
    device: DeviceOption = "auto",
    quantize: QuantizeOption = None,
    precision: PrecisionOption = None,
) -> None:
    """Log-probability of given translations: one row per pair, sum<TAB>mean<TAB>tokens.

    Forced decoding through the model's training forward pass; EOS counts as a token, as in
    the scores translate reports. Use it to filter noisy corpora or rerank n-best lists.
    """
    from nmt.decoding.scoring import score_command

    score_command(
        checkpoint,
        src=src,
        tgt=tgt,
        output=output,
        per_token=per_token,
        device=device,
        batch_tokens=batch_tokens,
        quantize=quantize,
        precision=precision,
    )


# --------------------------------------------------------------------------- evaluate


@app.command()
@user_errors
def evaluate(
    checkpoints: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Checkpoint to translate with (not with --hyp); several decode as an "
            "ensemble, as in translate.",
            metavar="CHECKPOINT",
            show_default=False,
        ),
    ] = None,
    corpus: Annotated[
        str | None, typer.Option(help="Corpus of --split (default: the checkpoint's).")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to translate and score, e.g. test_2016_flickr.")
    ] = None,
    src: Annotated[
        Path | None, typer.Option(help="Source file to translate (- for stdin).")
    ] = None,
    ref: Annotated[Path | None, typer.Option(help="Reference file (- for stdin).")] = None,
    hyp: Annotated[
        Path | None,
        typer.Option(help="Score this existing output instead of translating (- for stdin)."),
    ] = None,
    lowercase: Annotated[bool, typer.Option(help="Case-insensitive scores.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    beam_size: BeamSizeOption = None,
    length_penalty: LengthPenaltyOption = None,
    batch_tokens: BatchTokensOption = None,
    device: DeviceOption = "auto",
    quantize: QuantizeOption = None,
    precision: PrecisionOption = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where corpora are (default: the checkpoint's data.data_dir)."),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Where hypotheses and scores are written."),
    ] = None,
    sampling: SamplingOption = None,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
    prefix_file: PrefixFileOption = None,
    tokenize: Annotated[
        str | None,
        typer.Option(
            "--tokenize",
            help="BLEU's sacreBLEU tokenizer: auto (sacreBLEU's default for the target "
            "language: zh, ja-mecab, ko-mecab, else 13a), 13a, intl, zh, ja-mecab, ko-mecab, "
            "char or none (default: the checkpoint's eval.bleu_tokenize; with --hyp, auto by "
            "the --ref file's .<lang> suffix).",
        ),
    ] = None,
) -> None:
    """sacreBLEU BLEU, chrF and TER (with signatures) of a checkpoint (or an ensemble of
    several) or of existing output."""
    from nmt.decoding.sampling import parse_sampling
    from nmt.evaluation import evaluate_command

    evaluate_command(
        checkpoints=checkpoints,
        corpus=corpus,
        split=split,
        src=src,
        ref=ref,
        hyp=hyp,
        lowercase=lowercase,
        json_output=json_output,
        beam_size=beam_size,
        length_penalty=length_penalty,
        batch_tokens=batch_tokens,
        device=device,
        quantize=quantize,
        precision=precision,
        data_dir=data_dir,
        output_dir=output_dir,
        sampling=parse_sampling(sampling, temperature=temperature, seed=seed),
        prefix_file=prefix_file,
        tokenize=tokenize,
    )


# --------------------------------------------------------------------------- export


@app.command()
@user_errors
def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint (or, for --to ctranslate2, an `nmt export --to huggingface` dir)."
        ),
    ],
    out: Annotated[Path, typer.Argument(help="Directory (ctranslate2, huggingface) or .pt file.")],
    to: Annotated[str, typer.Option(help="ctranslate2, huggingface or nmt (a release .pt).")],
    quantization: Annotated[
        str | None,
        typer.Option(
            help="CTranslate2 weights: int8, int8_float32, int8_float16, int8_bfloat16, int16, "
            "float16, bfloat16 or float32 (default: as saved)."
        ),
    ] = None,
    fp16: Annotated[bool, typer.Option(help="--to nmt: store float16 weights.")] = False,
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Export a trained model: CTranslate2, Hugging Face transformers, or a release checkpoint."""
    from nmt.interop.export import export_command

    typer.echo(
        export_command(
            checkpoint, to=to, out=out, quantization=quantization, fp16=fp16, force=force
        ),
        err=True,
    )


# --------------------------------------------------------------------------- import

import_app = typer.Typer(
    no_args_is_help=True, help="Import a model from another toolkit as an nmt checkpoint."
)
app.add_typer(import_app, name="import")


@import_app.command("huggingface")
@user_errors
def import_huggingface(
    directory: Annotated[
        Path, typer.Argument(help="A local transformers model directory (Marian, M2M100).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write.")],
    src_lang: Annotated[
        str | None,
        typer.Option(help="Source language (M2M100: required; Marian: the tokenizer's)."),
    ] = None,
    tgt_lang: Annotated[
        str | None,
        typer.Option(help="Target language (M2M100: required; Marian: the tokenizer's)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Convert a transformers seq2seq directory into a checkpoint for translate / evaluate."""
    from nmt.interop.importer import import_command

    typer.echo(
        import_command(directory, output, src_lang=src_lang, tgt_lang=tgt_lang, force=force),
        err=True,
    )


# --------------------------------------------------------------------------- average


@app.command()
@user_errors
def average(
    checkpoints: Annotated[
        list[Path] | None, typer.Argument(help="Checkpoints to average.")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Averaged checkpoint to write.")
    ] = Path("averaged.pt"),
    last: Annotated[
        int | None, typer.Option(min=1, help="Average the last N step checkpoints of RUN_DIR.")
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory for --last.")] = None,
) -> None:
    """Average model parameters of several checkpoints (e.g. the last N)."""
    from nmt.checkpoint import save_checkpoint
    from nmt.training.checkpoints import (
        CheckpointManager,
        average_checkpoints,
        check_average_output,
    )

    paths = list(checkpoints or [])
    if last is not None:
        if run_dir is None:
            fail("--last needs --run-dir")
        steps = CheckpointManager(run_dir / "checkpoints", keep_last=last).step_checkpoints()
        if not steps:
            fail(f"no step checkpoints in {run_dir / 'checkpoints'}")
        paths = steps[-last:]
    if not paths:
        fail("give checkpoints to average, or --last N --run-dir DIR")
    check_average_output(paths, output)
    save_checkpoint(output, average_checkpoints(paths))
    typer.echo(
        f"averaged {len(paths)} checkpoints into {output}: {', '.join(p.name for p in paths)}"
    )


# --------------------------------------------------------------------------- plot


@app.command()
@user_errors
def plot(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories with a metrics.jsonl; several are overlaid (legend: names).",
            metavar="RUN_DIR",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Image to write: .png, .pdf or .svg (default RUN_DIR/curves.png for one run, "
            "curves.png for several).",
        ),
    ] = None,
) -> None:
    """Plot training loss, validation perplexity and BLEU against updates and wall time.

    Several runs share the axes, one colour each; a dotted line marks where a run resumed.
    """
    from nmt.plotting import plot_runs

    default = run_dirs[0] / "curves.png" if len(run_dirs) == 1 else Path("curves.png")
    path = plot_runs(run_dirs, output or default)
    typer.echo(f"wrote {path}")


# --------------------------------------------------------------------------- serve


@app.command()
@user_errors
def serve(
    model: Annotated[Path, typer.Argument(help="A checkpoint written by nmt train.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    device: DeviceOption = "auto",
    beam_size: Annotated[
        int | None,
        typer.Option(min=1, help="Beam size (default: the checkpoint's decode.beam_size)."),
    ] = None,
    quantize: QuantizeOption = None,
    precision: PrecisionOption = None,
    max_batch_tokens: Annotated[
        int, typer.Option(min=1, help="Source tokens per decoded batch, across requests.")
    ] = 2048,
    max_wait_ms: Annotated[
        float,
        # Bounded: the decoder thread's wait takes no more (inf was an OverflowError there,
        # the thread died and every request hung), and a longer one outlasts any --timeout.
        typer.Option(
            min=0,
            max=60_000,
            help="How long a request may wait for others to share its batch.",
        ),
    ] = 5.0,
    max_chars: Annotated[
        int, typer.Option(min=1, help="Characters per request (more: 413).")
    ] = 20_000,
    max_lines: Annotated[int, typer.Option(min=1, help="Lines per request (more: 413).")] = 1000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="NMT_API_KEY",
            help="Require this key (api_key field or Authorization: Bearer); else 401.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="Allow browser pages from this origin (repeatable; * for any)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request may take (more: 504).")
    ] = 60.0,
) -> None:
    """Serve MODEL over HTTP: a LibreTranslate-compatible API, a native API and a web page.

    \b
    Example:
      nmt serve runs/multi30k_de_en/checkpoints/best.pt --port 8000
      curl -s localhost:8000/translate -H 'Content-Type: application/json' \\
        -d '{"q": "Ein Hund rennt.", "source": "de", "target": "en"}'

    Also: GET / (the page), POST /v1/translate, GET /languages, /health, /metrics, /docs.
    SIGTERM or Ctrl-C: stop accepting, finish the requests in flight, exit.
    """
    try:
        from nmt.serve.app import ServeSettings
        from nmt.serve.server import run_server
    except ImportError as exc:
        fail(f"nmt serve needs the serve extra ({exc.name} is missing): pip install 'nmt[serve]'")
    if api_key is not None and not api_key:
        fail("--api-key: give a non-empty key (or leave the option out)")
    settings = ServeSettings(
        max_batch_tokens=max_batch_tokens,
        max_wait_ms=max_wait_ms,
        max_chars=max_chars,
        max_lines=max_lines,
        api_key=api_key,
        cors_origins=tuple(cors_origin or ()),
        timeout=timeout,
    )
    run_server(
        model,
        host=host,
        port=port,
        device=device,
        beam_size=beam_size,
        quantize=quantize,
        precision=precision,
        settings=settings,
    )


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
