"""The `nmt` command line. Each command is a thin wrapper: load config, call one stage, print.

Stage modules are imported inside the commands so `nmt --help` stays fast and never imports
`datasets` (which GPU machines may lack) or torch.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Annotated

import typer
from typer import Argument, Option

from nmt.config import BleuTokenize, CTranslate2Quantize, DecodeConfig, choice_enum, choices
from nmt.config import ExportTarget as ExportTargetName
from nmt.config import Precision as PrecisionName
from nmt.config.schema import Doc
from nmt.errors import NmtError
from nmt.memory import configure_cpu_memory

# Before any command imports torch: torch reads THP_MEM_ALLOC_ENABLE once, at its first
# CPU allocation.
configure_cpu_memory()


class _WholeSummaries(typer.core.TyperGroup):
    """Lists each command with the whole first paragraph of its help, wrapped to the terminal
    (click would cut it at the first full stop or with "..." to fit one line)."""

    def format_commands(self, ctx, formatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            summary = inspect.cleandoc(self.commands[name].help or "").split("\n\n")[0]
            rows.append((name, " ".join(summary.split())))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


# click's plain help wraps every help text at the terminal's width; rich's tables would cut
# words wider than their help column with an ellipsis.
app = typer.Typer(
    cls=_WholeSummaries,
    rich_markup_mode=None,
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
        Option(
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


OutputOption = functools.partial(Option, "--output", "-o")
ConfigArg = Annotated[Path, Argument(help="Experiment YAML config.", show_default=False)]
OverridesArg = Annotated[
    list[str] | None,
    Argument(help="Dotted overrides, e.g. train.lr=5e-4 model.preset=tiny.", show_default=False),
]


InitFromOption = Annotated[
    Path | None,
    Option(
        "--init-from",
        help="Start a new run from this checkpoint's weights, architecture and tokenizer "
        "(the same as train.init_from=CHECKPOINT).",
        show_default=False,
    ),
]


def load(config: Path, overrides: list[str] | None, init_from: Path | None = None):
    from nmt.checkpoint import load_run_config
    from nmt.runtime import check_fits_in_memory

    overrides = list(overrides or [])
    if init_from is not None:  # as a JSON string, which YAML reads back verbatim
        overrides.append(f"train.init_from={json.dumps(str(init_from))}")
    cfg = load_run_config(config, overrides)
    check_fits_in_memory(cfg, source=str(config))  # before download, prepare and training
    return cfg


@app.command()
@user_errors
def download(
    corpus: Annotated[
        str,
        Argument(
            help="multi30k, wmt_newstest, hf:<dataset>[:<config>], or a new name with --src/--tgt."
        ),
    ],
    langs: Annotated[
        str | None, Option(help="Comma-separated languages (default: all the corpus has).")
    ] = None,
    pair: Annotated[
        str | None, Option(help="Language pair such as de-en (same as --langs de,en).")
    ] = None,
    split: Annotated[
        list[str] | None, Option(help="Split to fetch (repeatable; default: all).")
    ] = None,
    data_dir: Annotated[Path, Option(help="Where corpora are written.")] = Path("data"),
    mirror: Annotated[
        Path | None,
        Option(help="Offline mirror <dir>/<corpus>/<split>.<lang> (env NMT_DATA_MIRROR)."),
    ] = None,
    src: Annotated[Path | None, Option(help="Register a user source file (plain or .gz).")] = None,
    tgt: Annotated[Path | None, Option(help="Register a user target file (plain or .gz).")] = None,
    src_lang: Annotated[str, Option(help="Language of --src.")] = "src",
    tgt_lang: Annotated[str, Option(help="Language of --tgt.")] = "tgt",
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


@app.command()
@user_errors
def prepare(
    config: ConfigArg,
    overrides: OverridesArg = None,
    force: Annotated[bool, Option(help="Redo the work even if inputs are unchanged.")] = False,
    init_from: InitFromOption = None,
) -> None:
    """Clean the corpus, train SentencePiece (or reuse --init-from's) and binarize every split."""
    from nmt.pipeline.run import prepare_command

    prepare_command(load(config, overrides, init_from), force=force)


@app.command()
@user_errors
def train(
    config: ConfigArg,
    overrides: OverridesArg = None,
    evaluate_at_end: Annotated[
        bool, Option("--evaluate/--no-evaluate", help="Score data.test_splits at the end.")
    ] = True,
    init_from: InitFromOption = None,
) -> None:
    """Train (or resume: re-running continues from the run directory's last checkpoint).

    Multi-GPU / multi-node: `torchrun --nproc-per-node N -m nmt.cli train CONFIG`.
    """
    from nmt.pipeline.run import train_command

    train_command(load(config, overrides, init_from), evaluate_at_end=evaluate_at_end)


@app.command()
@user_errors
def run(
    config: ConfigArg, overrides: OverridesArg = None, init_from: InitFromOption = None
) -> None:
    """The whole pipeline: download if missing, prepare, train, average, evaluate."""
    from nmt.pipeline.run import run_command

    for r in run_command(load(config, overrides, init_from)):
        bleu = r["cased"]["bleu"]
        typer.echo(
            f"{r['split']}: BLEU {bleu['score']:.2f} (lowercased "
            f"{r['lowercased']['bleu']['score']:.2f}) chrF {r['cased']['chrf']['score']:.2f}  "
            f"[{bleu['signature']}]"
        )


BleuTokenizer = choice_enum(BleuTokenize, "BleuTokenizer")
ExportQuantize = choice_enum(CTranslate2Quantize, "ExportQuantize")
ExportTarget = choice_enum(ExportTargetName, "ExportTarget")


# The decoding options, defined once for every command that decodes; their values are checked
# in one place, `nmt.decoding.options.DecodeOptions` (the bounds of the config's decode section).
def decode_option(name: str):
    """The option of the setting decode.<name>: its type, choices and description are the
    config schema's; left out, it is the model's own setting."""
    hint = typing.get_type_hints(DecodeConfig, include_extras=True)[name]
    kind, *notes = typing.get_args(hint)
    if typing.get_origin(kind) is typing.Literal:
        kind = choice_enum(kind, name.title())
    (doc,) = (note.text for note in notes if isinstance(note, Doc))
    help = f"{doc.rstrip('.')} (default: the model's decode.{name})."
    return Annotated[kind | None, Option(help=help)]


BeamSizeOption = decode_option("beam_size")
LengthPenaltyOption = decode_option("length_penalty")
MinLenOption = decode_option("min_len")
MaxLenAOption = decode_option("max_len_a")
MaxLenBOption = decode_option("max_len_b")
BatchTokensOption = decode_option("batch_tokens")
QuantizeOption = decode_option("quantize")
PrecisionOption = decode_option("precision")

ModelArg = Annotated[
    Path,
    Argument(
        help="A checkpoint written by nmt train (or nmt average, nmt import), or a directory "
        "written by nmt export --to ctranslate2.",
        metavar="MODEL",
        show_default=False,
    ),
]
ModelsArg = Annotated[
    list[Path],
    Argument(
        help="A checkpoint written by nmt train, or an `nmt export --to ctranslate2` dir; "
        "several checkpoints decode as an ensemble (the mean of their log-probs).",
        metavar="MODEL",
        show_default=False,
    ),
]
DeviceOption = Annotated[
    str, Option(help="auto (a GPU if there is one, else the CPU), cpu, cuda or cuda:N.")
]
SamplingOption = Annotated[
    str | None,
    Option(
        help="Draw each token instead of searching: topk:K, topp:P (nucleus) or random "
        "(beam 1, one hypothesis per line)."
    ),
]
TemperatureOption = Annotated[
    float | None,
    Option(help="With --sampling: divide the log-probs by T before drawing (default 1)."),
]
SeedOption = Annotated[int | None, Option(help="With --sampling: the random seed (default 0).")]
PrefixFileOption = Annotated[
    str | None,
    Option(
        help="Target prefixes, one line per input line (may be empty): each translation "
        "starts with its prefix and search continues from there."
    ),
]


def decode_options(arguments: dict):
    """The DecodeOptions of a command's arguments (its `locals()`), checked once, here."""
    import dataclasses

    from nmt.decoding.options import DecodeOptions

    names = [f.name for f in dataclasses.fields(DecodeOptions) if f.name != "spelling"]
    values = {k: arguments[k] for k in names if k in arguments}
    values = {k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items()}
    return DecodeOptions(**values, spelling="cli")  # problems name `--beam-size`


@app.command()
@user_errors(stdout_is_output=True)
def translate(
    models: ModelsArg,
    input: Annotated[str, Option("--input", "-i", help="Input file, or - for stdin.")] = "-",
    output: Annotated[str, OutputOption(help="Output file, or - for stdout.")] = "-",
    beam_size: BeamSizeOption = None,
    n_best: Annotated[
        int | None,
        Option(help="Write N hypotheses per line as index<TAB>score<TAB>text (at most the beam)."),
    ] = None,
    length_penalty: LengthPenaltyOption = None,
    min_len: MinLenOption = None,
    max_len_a: MaxLenAOption = None,
    max_len_b: MaxLenBOption = None,
    batch_tokens: BatchTokensOption = None,
    device: DeviceOption = "auto",
    chunk_lines: Annotated[int, Option(min=1, help="Lines read and translated at a time.")] = 2000,
    quantize: QuantizeOption = None,
    precision: PrecisionOption = None,
    sampling: SamplingOption = None,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
    prefix_file: PrefixFileOption = None,
    print_alignment: Annotated[
        bool,
        Option(
            help="End each line (or n-best row) with <TAB> and the hard alignment of the "
            "last decoder layer's cross-attention, fairseq's 0-0 1-2 ... (source-target "
            "piece indices); one checkpoint only."
        ),
    ] = False,
) -> None:
    """Translate text line by line: exactly one output line per input line."""
    from nmt.backends import load_backend
    from nmt.decoding.stream import translate_stream

    options = decode_options(locals())
    translate_stream(
        lambda: load_backend(models, options),
        input,
        output,
        model=models[0],
        chunk_lines=chunk_lines,
        prefix_file=prefix_file,
        print_alignment=print_alignment,
        n_best_rows=n_best is not None,
    )


@app.command()
@user_errors(stdout_is_output=True)
def score(
    model: Annotated[
        Path,
        Argument(help="A checkpoint written by nmt train.", metavar="MODEL", show_default=False),
    ],
    src: Annotated[Path, Option(help="Source lines (- for stdin).")],
    tgt: Annotated[Path, Option(help="Their translations, one per source line.")],
    output: Annotated[str, OutputOption(help="Scores file, or - for stdout.")] = "-",
    per_token: Annotated[
        bool, Option(help="Add a column with each token's log-prob (EOS last).")
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
    from nmt.backends import load_checkpoint_engine
    from nmt.decoding.scoring import score_command

    options = decode_options(locals())
    score_command(
        lambda: load_checkpoint_engine(model, options, command="nmt score"),
        src=src,
        tgt=tgt,
        output=output,
        per_token=per_token,
    )


@app.command()
@user_errors
def evaluate(
    models: Annotated[
        list[Path] | None,
        Argument(
            help="Model to translate with (not with --hyp); several checkpoints decode as an "
            "ensemble, as in translate.",
            metavar="MODEL",
            show_default=False,
        ),
    ] = None,
    corpus: Annotated[str | None, Option(help="Corpus of --split (default: the model's).")] = None,
    split: Annotated[
        str | None, Option(help="Split to translate and score, e.g. test_2016_flickr.")
    ] = None,
    src: Annotated[Path | None, Option(help="Source file to translate (- for stdin).")] = None,
    ref: Annotated[Path | None, Option(help="Reference file (- for stdin).")] = None,
    hyp: Annotated[
        Path | None,
        Option(help="Score this existing output instead of translating (- for stdin)."),
    ] = None,
    lowercase: Annotated[bool, Option(help="Case-insensitive scores.")] = False,
    json_output: Annotated[bool, Option("--json", help="Print one JSON object.")] = False,
    beam_size: BeamSizeOption = None,
    length_penalty: LengthPenaltyOption = None,
    min_len: MinLenOption = None,
    max_len_a: MaxLenAOption = None,
    max_len_b: MaxLenBOption = None,
    batch_tokens: BatchTokensOption = None,
    device: DeviceOption = "auto",
    quantize: QuantizeOption = None,
    precision: PrecisionOption = None,
    data_dir: Annotated[
        Path | None,
        Option(help="Where corpora are (default: the model's data.data_dir)."),
    ] = None,
    output: Annotated[
        Path | None,
        OutputOption(
            help="Directory for hypotheses, scores and results.json (default: the run's "
            "eval/ for a checkpoint in runs/<name>/checkpoints/, else eval/ beside it).",
        ),
    ] = None,
    sampling: SamplingOption = None,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
    prefix_file: PrefixFileOption = None,
    tokenize: Annotated[
        BleuTokenizer | None,
        Option(
            "--tokenize",
            help="BLEU's sacreBLEU tokenizer; auto is sacreBLEU's default for the target "
            "language: zh, ja-mecab, ko-mecab, else 13a (default: the model's "
            "eval.bleu_tokenize; with --hyp, auto by the --ref file's .<lang> suffix).",
        ),
    ] = None,
) -> None:
    """sacreBLEU BLEU, chrF and TER (with signatures) of a model (or an ensemble of several
    checkpoints) or of existing output."""
    from nmt.pipeline.evaluate import EvaluateRequest, evaluate_command

    request = EvaluateRequest(
        models=tuple(models or ()),
        options=decode_options(locals()),
        corpus=corpus,
        split=split,
        src=src,
        ref=ref,
        hyp=hyp,
        prefix_file=prefix_file,
        lowercase=lowercase,
        tokenize=tokenize.value if tokenize else None,
        data_dir=data_dir,
        output=output,
    )
    evaluate_command(request, json_output=json_output)


@app.command()
@user_errors
def export(
    model: Annotated[
        Path,
        Argument(
            help="A checkpoint (or, for --to ctranslate2, an `nmt export --to huggingface` dir).",
            metavar="MODEL",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        OutputOption(help="Directory (ctranslate2, huggingface) or .pt file (nmt)."),
    ],
    to: Annotated[ExportTarget, Option(help="What to write.")],
    quantize: Annotated[
        ExportQuantize | None,
        Option(
            metavar="TYPE",
            help="--to ctranslate2: the weights' type, "
            f"{', '.join(choices(CTranslate2Quantize))} (default: as saved).",
        ),
    ] = None,
    precision: Annotated[
        choice_enum(PrecisionName, "Precision") | None,
        Option(help="--to nmt: fp16 stores float16 weights (default: fp32)."),
    ] = None,
    force: Annotated[bool, Option(help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Export a trained model: CTranslate2, Hugging Face transformers, or a release checkpoint."""
    from nmt.interop.export import export_command

    typer.echo(
        export_command(
            model,
            to=to.value,
            out=output,
            quantize=quantize.value if quantize else None,
            precision=precision.value if precision else None,
            force=force,
        ),
        err=True,
    )


import_app = typer.Typer(
    cls=_WholeSummaries,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Import a model from another toolkit as an nmt checkpoint.",
)
app.add_typer(import_app, name="import")


@import_app.command("huggingface")
@user_errors
def import_huggingface(
    directory: Annotated[
        Path, Argument(help="A local transformers model directory (Marian, M2M100).")
    ],
    output: Annotated[Path, OutputOption(help="Checkpoint to write.")],
    src_lang: Annotated[
        str | None,
        Option(help="Source language (M2M100: required; Marian: the tokenizer's)."),
    ] = None,
    tgt_lang: Annotated[
        str | None,
        Option(help="Target language (M2M100: required; Marian: the tokenizer's)."),
    ] = None,
    force: Annotated[bool, Option(help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Convert a transformers seq2seq directory into a checkpoint for translate / evaluate."""
    from nmt.interop.importer import import_command

    typer.echo(
        import_command(directory, output, src_lang=src_lang, tgt_lang=tgt_lang, force=force),
        err=True,
    )


@app.command()
@user_errors
def average(
    checkpoints: Annotated[
        list[Path] | None, Argument(help="Checkpoints to average.", metavar="CHECKPOINT")
    ] = None,
    output: Annotated[Path, OutputOption(help="Averaged checkpoint to write.")] = Path(
        "averaged.pt"
    ),
    last: Annotated[
        int | None, Option(min=1, help="Average the last N step checkpoints of RUN_DIR.")
    ] = None,
    run_dir: Annotated[Path | None, Option(help="Run directory for --last.")] = None,
) -> None:
    """Average model parameters of several checkpoints (e.g. the last N)."""
    from nmt.training.checkpoints import average_command

    typer.echo(average_command(list(checkpoints or []), output, last=last, run_dir=run_dir))


@app.command()
@user_errors
def plot(
    run_dirs: Annotated[
        list[Path],
        Argument(
            help="Run directories with a metrics.jsonl; several are overlaid (legend: names).",
            metavar="RUN_DIR",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        OutputOption(
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


@app.command()
@user_errors
def serve(
    model: ModelArg,
    host: Annotated[str, Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    device: DeviceOption = "auto",
    beam_size: BeamSizeOption = None,
    length_penalty: LengthPenaltyOption = None,
    min_len: MinLenOption = None,
    max_len_a: MaxLenAOption = None,
    max_len_b: MaxLenBOption = None,
    quantize: QuantizeOption = None,
    precision: PrecisionOption = None,
    max_batch_tokens: Annotated[
        int, Option(min=1, help="Source tokens per decoded batch, across requests.")
    ] = 2048,
    max_wait_ms: Annotated[
        float,
        # Bounded: the decoder thread's wait takes no more (inf was an OverflowError there,
        # the thread died and every request hung), and a longer one outlasts any --timeout.
        Option(
            min=0,
            max=60_000,
            help="How long a request may wait for others to share its batch.",
        ),
    ] = 5.0,
    max_chars: Annotated[int, Option(min=1, help="Characters per request (more: 413).")] = 20_000,
    max_lines: Annotated[int, Option(min=1, help="Lines per request (more: 413).")] = 1000,
    api_key: Annotated[
        str | None,
        Option(
            envvar="NMT_API_KEY",
            help="Require this key (api_key field or Authorization: Bearer); else 401.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        Option(help="Allow browser pages from this origin (repeatable; * for any)."),
    ] = None,
    timeout: Annotated[
        float, Option(min=0.001, help="Seconds a request may take (more: 504).")
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
        from nmt.serve.model import ServedModel
        from nmt.serve.server import run_server
    except ImportError as exc:
        fail(f"nmt serve needs the serve extra ({exc.name} is missing): pip install 'nmt[serve]'")
    from nmt.backends import load_backend

    if api_key is not None and not api_key:
        fail("--api-key: give a non-empty key (or leave the option out)")
    options = decode_options(locals())
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
        lambda: ServedModel(load_backend(model, options), name=model.name),
        host=host,
        port=port,
        settings=settings,
    )


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
