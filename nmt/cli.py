"""The `nmt` command line. Each command is a thin wrapper: load config, call one stage, print.

Stage modules are imported inside the commands so `nmt --help` stays fast and never imports
`datasets` (which GPU machines may lack) or torch.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from nmt.errors import NmtError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Neural machine translation: download -> prepare -> train -> translate -> evaluate.",
)


def fail(message: str, code: int = 2) -> None:
    """Print one clear message to stderr and exit non-zero (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(command):
    """Turn NmtError (and Ctrl-C) into a one-line message and a non-zero exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NmtError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:
            sys.stderr.close()  # e.g. `nmt translate ... | head`: not an error
            raise typer.Exit(0) from None

    return wrapper


ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML config.", show_default=False)]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Dotted overrides, e.g. train.lr=5e-4 model.preset=tiny.", show_default=False
    ),
]


def load(config: Path, overrides: list[str] | None):
    from nmt.config import load_config

    return load_config(config, overrides or [])


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
) -> None:
    """Clean the corpus, train SentencePiece and binarize every split."""
    from nmt.config import write_resolved_config
    from nmt.data.prepare import prepare as run_prepare
    from nmt.report import print_prepare_summary

    cfg = load(config, overrides)
    result = run_prepare(cfg, force=force)
    write_resolved_config(cfg)
    print_prepare_summary(result)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
