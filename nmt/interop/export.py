"""The `nmt export` command: read the source once, write the target into a staging
directory (or file) beside OUT, and rename it into place only when complete, so that a
failed or interrupted export never leaves a half-written OUT."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from functools import partial
from pathlib import Path

from nmt.errors import NmtError, OutputError
from nmt.files import os_reason


def export_command(
    checkpoint: Path,
    *,
    to: str,
    out: Path,
    quantize: str | None = None,
    precision: str | None = None,
    force: bool = False,
) -> str:
    """Run one export (`to`, `quantize` and `precision` are choices the command line
    checked); returns the summary line. Every refusal comes before the (slow) checkpoint
    load: the target's options, the optional extra, OUT."""
    from nmt.extras import require_extra
    from nmt.interop.source import load_source

    fp16 = _release_fp16(to, quantize=quantize, precision=precision)
    if to != "nmt":
        require_extra(to, f"nmt export --to {to}")
    _check_out(out, force=force)
    checkpoint = Path(checkpoint)
    if to == "ctranslate2" and checkpoint.is_dir():
        _staged(out, partial(_from_transformers, checkpoint, quantization=quantize), force=force)
        return f"exported {checkpoint} (transformers) to CTranslate2 in {out}"
    source = load_source(checkpoint)
    if to == "nmt":
        from nmt.interop.release import export_release

        export_release(source, out, fp16=fp16)
        return f"exported {checkpoint} as the release checkpoint {out}" + (
            " (fp16 weights)" if fp16 else ""
        )
    if to == "ctranslate2":
        from nmt.interop.ctranslate2 import export_ctranslate2

        _staged(out, partial(export_ctranslate2, source, quantization=quantize), force=force)
        return f"exported {checkpoint} to CTranslate2 in {out}" + (
            f" ({quantize})" if quantize else ""
        )
    from nmt.interop.huggingface import check_representable, export_huggingface

    check_representable(source)
    _staged(out, partial(export_huggingface, source), force=force)
    return f"exported {checkpoint} to transformers in {out}"


def _release_fp16(to: str, *, quantize: str | None, precision: str | None) -> bool:
    """Whether a release checkpoint stores float16 weights; an option that cannot apply to
    `to` is refused, named."""
    if quantize is not None and to != "ctranslate2":
        raise NmtError(f"--quantize applies to --to ctranslate2 only, not --to {to}")
    if precision is not None and to != "nmt":
        raise NmtError("--precision applies to --to nmt only (for CTranslate2: --quantize float16)")
    if precision not in (None, "fp32", "fp16"):
        raise NmtError(f"--precision {precision}: a release checkpoint stores fp32 or fp16")
    return precision == "fp16"


def _check_out(out: Path, *, force: bool) -> None:
    if out.exists() and not force:
        raise NmtError(f"{out} exists; remove it or pass --force to replace it")
    if not out.parent.exists() and str(out.parent) not in ("", "."):
        raise NmtError(f"cannot write {out}: the directory {out.parent} does not exist")


def _staged(out: Path, write, *, force: bool) -> None:
    """`write(staging_dir)`, then replace `out` by it; the staging dir goes on any failure.

    Without `force`, an `out` that appeared while writing (another `nmt export` to the same
    OUT) is refused, not replaced: `_check_out` ran before the slow write, and both
    processes would otherwise report success with one's output silently gone."""
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        write(staging)
        if out.exists() and not force:
            raise NmtError(
                f"{out} appeared while exporting (another process wrote it); "
                "remove it or pass --force to replace it"
            )
        try:
            _commit(staging, out)
        except OSError as exc:
            raise OutputError(f"cannot write {out}: {os_reason(exc, out)}") from exc
    except BaseException:
        _remove(staging)
        raise


def _commit(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
        os.replace(out, old)
        os.replace(staging, out)
        _remove(old)
    else:
        os.rename(staging, out)  # fails, rather than merging, if a directory appeared


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _from_transformers(hf_dir: Path, staging: Path, quantization: str | None) -> None:
    """CTranslate2's own TransformersConverter over an `nmt export --to huggingface` dir."""
    from nmt.extras import require_extra
    from nmt.interop.ctranslate2 import CONFIG_NAME, copy_tokenizer_files

    ctranslate2 = require_extra("ctranslate2", "nmt export --to ctranslate2")
    if not (hf_dir / "config.json").is_file():
        raise NmtError(f"{hf_dir} is a directory but not a transformers model (no config.json)")
    if _model_type(hf_dir) == "marian":
        # CTranslate2's Marian converter assumes OPUS-MT's conventions: it drops the last
        # vocabulary row and starts the decoder from a zero embedding, not nmt's BOS.
        raise NmtError(
            f"{hf_dir} is a Marian (model.norm=post) export, which CTranslate2's Marian "
            "converter would misread; export the nmt checkpoint itself with --to ctranslate2"
        )
    try:
        converter = ctranslate2.converters.TransformersConverter(str(hf_dir))
        converter.convert(str(staging), quantization=quantization, force=True)
    except (ValueError, NotImplementedError, OSError) as exc:
        raise NmtError(f"CTranslate2 cannot convert {hf_dir}: {exc}") from None
    copy_tokenizer_files(hf_dir, staging)
    if not (staging / CONFIG_NAME).is_file():
        raise NmtError(f"{hf_dir} has no {CONFIG_NAME}: it was not written by nmt export")
    _add_source_eos(staging / "config.json")


def _add_source_eos(config_file: Path) -> None:
    """The transformers tokenizer appends EOS to the source itself; CTranslate2 decoding of
    pieces (nmt translate, the README's five lines) relies on the model config doing it."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["add_source_eos"] = True
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _model_type(hf_dir: Path) -> str | None:
    try:
        return json.loads((hf_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
