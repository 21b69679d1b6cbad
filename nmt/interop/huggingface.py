"""`nmt export --to huggingface`: a directory `AutoModelForSeq2SeqLM` and `AutoTokenizer`
load with no custom code, computing nmt's model exactly.

Which transformers class, per nmt architecture:
  model.norm post -> MarianMTModel: post-norm layers, no final LayerNorm, no LayerNorm on
                     the embeddings; shared or separate vocabularies
                     (share_encoder_decoder_embeddings, decoder_vocab_size), tied or untied
                     output (tie_word_embeddings).
  model.norm pre  -> PegasusForConditionalGeneration: pre-norm layers closed by
                     encoder.layer_norm / decoder.layer_norm, no LayerNorm on the embeddings.
                     Pegasus has one vocabulary for both sides: a pre-norm model with separate
                     vocabularies is refused (`nmt export --to ctranslate2` represents it).
  (M2M100, the other pre-norm layout, computes its sinusoids with fairseq's frequencies
  10000^(-i/(D/2-1)) and recomputes them on load: it cannot hold nmt's positions.)

Conventions that differ from nmt's and how the export sets them:
  * Positions: Marian and Pegasus use the same frequencies as nmt and count from 0 (no
    padding offset), but put sines first and cosines second; the model width is permuted so
    that their table is nmt's (nmt.interop.layout).
  * Embedding scale: scale_embedding=True (tokens * sqrt(D)), as nmt.
  * Decoder start: decoder_start_token_id = nmt's BOS (2); Marian and Pegasus default to PAD.
    For Pegasus, whose CTranslate2 converter starts the decoder from the tokenizer's pad
    token, the tokenizer's pad token is BOS ("<s>", id 2) too: padding is masked by the
    attention mask, so which id pads does not change a result. Marian keeps PAD = 0.
  * EOS: id 3; the tokenizer (MarianTokenizer over nmt's own SentencePiece models and
    vocab.json with nmt's ids) appends it to the source, as nmt does.
  * final_logits_bias: nmt's output bias (model.output_bias, which imported Marian models
    have), else all zeros.
  * Generation: beam search scores log_prob / length**alpha over the generated tokens, EOS
    included, as nmt; early_stopping=True is nmt's (fairseq's) rule: stop once num_beams
    hypotheses have finished. PAD and BOS are suppressed (suppress_tokens, applied after the
    log-softmax as nmt masks), min_new_tokens = decode.min_len, no n-gram blocking.
    nmt's per-sentence limit a * src_len + b has no generate() equivalent: max_length caps
    at model.max_positions; pass max_new_tokens to bound it. At a limit, generate() cuts
    its best extensions where nmt ends each live hypothesis with EOS, counting EOS's
    log-prob; forced_eos_token_id stays unset, since it would give that EOS probability 1.
    So generate() returns nmt's translation for every sentence whose search ends before
    the limit (tests/interop/test_equivalence.py: every variant, greedy and beam 5), and
    may not for one that reaches it.
  * Text: nmt NFC-normalises input lines before SentencePiece; MarianTokenizer does not (and
    applies Moses punctuation normalisation when sacremoses is installed).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from nmt.checkpoint import checkpoint_step
from nmt.config import config_to_dict
from nmt.data.prepare import splits_by_corpus
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.errors import NmtError
from nmt.extras import require_extra
from nmt.interop.layout import to_transformers
from nmt.interop.source import ExportSource, write_provenance
from nmt.version import __version__

COMMAND = "nmt export --to huggingface"
NMT_CONFIG = "nmt_config.json"


def check_representable(source: ExportSource) -> None:
    """Refuse, naming the setting, what no transformers class here represents exactly."""
    cfg = source.config.model
    foreign = {
        "model.positions": (cfg.positions, "vaswani"),
        "model.position_offset": (cfg.position_offset, 0),
        "model.source_prefix_id": (cfg.source_prefix_id, None),
        "model.target_prefix_id": (cfg.target_prefix_id, None),
    }
    for key, (value, plain) in foreign.items():
        if value != plain:
            raise NmtError(
                f"{COMMAND}: {key}={value} (an imported M2M100 model's convention) has no "
                "Marian or Pegasus layout"
            )
    if cfg.norm == "pre" and not cfg.share_embeddings:
        raise NmtError(
            f"{COMMAND}: model.norm=pre with model.share_embeddings=false has no transformers "
            "layout (Pegasus, the pre-norm one, has one vocabulary); use --to ctranslate2"
        )


def export_huggingface(source: ExportSource, out_dir: Path) -> None:
    """Write model, tokenizer, generation config and model card into `out_dir`."""
    require_extra("huggingface", COMMAND)
    check_representable(source)
    model = transformers_model(source)
    model.save_pretrained(out_dir)
    tokenizer = build_tokenizer(source)
    tokenizer.save_pretrained(out_dir)
    (out_dir / NMT_CONFIG).write_text(json.dumps(config_to_dict(source.config), indent=2))
    write_provenance(source, out_dir)
    (out_dir / "README.md").write_text(model_card(source), encoding="utf-8")


def model_config(source: ExportSource):
    """MarianConfig (post-norm) or PegasusConfig (pre-norm) of the checkpoint's model."""
    from transformers import MarianConfig, PegasusConfig

    cfg, tok, decode = source.config.model, source.tokenizer, source.config.decode
    common = dict(
        vocab_size=tok.src_vocab_size,
        d_model=cfg.d_model,
        encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.heads,
        decoder_attention_heads=cfg.heads,
        encoder_ffn_dim=cfg.ffn_dim,
        decoder_ffn_dim=cfg.ffn_dim,
        activation_function=cfg.activation,  # "gelu" is the exact (erf) GELU in both
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        max_position_embeddings=cfg.max_positions,
        scale_embedding=True,
        tie_word_embeddings=cfg.tie_output,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        decoder_start_token_id=BOS_ID,
        forced_eos_token_id=None,
        num_beams=decode.beam_size,
    )
    if cfg.norm == "post":
        return MarianConfig(
            **common,
            pad_token_id=PAD_ID,
            decoder_vocab_size=tok.tgt_vocab_size,
            share_encoder_decoder_embeddings=cfg.share_embeddings,
        )
    # normalize_before / normalize_embedding: read by CTranslate2's converter, which treats
    # a Pegasus model as a BART one; transformers keeps them as plain config attributes.
    return PegasusConfig(
        **common, pad_token_id=BOS_ID, normalize_before=True, normalize_embedding=False
    )


def transformers_model(source: ExportSource):
    """The transformers model with nmt's weights (see nmt.interop.layout), in eval mode."""
    from transformers import GenerationConfig, MarianMTModel, PegasusForConditionalGeneration

    config = model_config(source)
    cls = MarianMTModel if source.config.model.norm == "post" else PegasusForConditionalGeneration
    torch.manual_seed(0)  # the freshly initialised weights are all overwritten below
    model = cls(config).eval()
    weights = to_transformers(source.model.state_dict(), cfg=source.config.model)
    if source.config.model.share_embeddings:
        weights["model.shared.weight"] = weights["model.encoder.embed_tokens.weight"]
    _load_exactly(model, weights, source.model.state_dict().get("output.bias"))
    model.generation_config = generation_config(source, GenerationConfig)
    return model


def _load_exactly(model, weights: dict[str, torch.Tensor], bias: torch.Tensor | None) -> None:
    """Copy every mapped tensor and the output bias (zeros without one); anything of the
    model left unset must be a recomputed position table."""
    own = model.state_dict()
    unknown = sorted(set(weights) - set(own))
    if unknown:
        raise AssertionError(f"no such transformers tensors: {unknown[:5]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            if own[name].shape != tensor.shape:
                raise AssertionError(f"{name}: {tuple(own[name].shape)} != {tuple(tensor.shape)}")
            own[name].copy_(tensor)
        if hasattr(model, "final_logits_bias"):  # [1, V]: nmt's output bias, if it has one
            model.final_logits_bias.zero_()
            if bias is not None:
                model.final_logits_bias.copy_(bias[None])
    done = {own[name].data_ptr() for name in weights}  # tied tensors share storage
    unset = [
        n
        for n in own
        if own[n].data_ptr() not in done and "embed_positions" not in n and n != "final_logits_bias"
    ]
    if unset:
        raise AssertionError(f"transformers tensors nmt did not set: {unset[:5]}")


def generation_config(source: ExportSource, cls):
    """nmt's decode settings as far as generate() has them (see the module docstring)."""
    decode, cfg = source.config.decode, source.config.model
    return cls(
        num_beams=decode.beam_size,
        length_penalty=decode.length_penalty,
        early_stopping=True,
        min_new_tokens=decode.min_len,
        max_length=cfg.max_positions,
        suppress_tokens=[PAD_ID, BOS_ID],
        decoder_start_token_id=BOS_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID if cfg.norm == "post" else BOS_ID,
        forced_eos_token_id=None,
        no_repeat_ngram_size=0,
        do_sample=False,
    )


def build_tokenizer(source: ExportSource):
    """A MarianTokenizer over nmt's SentencePiece models, with nmt's ids (vocab.json)."""
    from transformers import MarianTokenizer

    tok, cfg = source.tokenizer, source.config.model
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "source.spm").write_bytes(tok.src_model)
        (work / "target.spm").write_bytes(tok.tgt_model)
        src_vocab = _vocab(tok.src)
        (work / "vocab.json").write_text(json.dumps(src_vocab, ensure_ascii=False))
        separate = not tok.joint
        if separate:
            (work / "target_vocab.json").write_text(json.dumps(_vocab(tok.tgt), ensure_ascii=False))
        pieces = [tok.tgt.id_to_piece(i) for i in (UNK_ID, EOS_ID, BOS_ID, PAD_ID)]
        unk, eos, bos, pad = pieces
        return MarianTokenizer(
            source_spm=str(work / "source.spm"),
            target_spm=str(work / "target.spm"),
            vocab=str(work / "vocab.json"),
            target_vocab_file=str(work / "target_vocab.json") if separate else None,
            separate_vocabs=separate,
            source_lang=source.config.data.src_lang,
            target_lang=source.config.data.tgt_lang,
            unk_token=unk,
            eos_token=eos,
            pad_token=pad if cfg.norm == "post" else bos,
            model_max_length=cfg.max_positions,
        )


def _vocab(processor) -> dict[str, int]:
    return {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}


# --------------------------------------------------------------------------- model card


def model_card(source: ExportSource) -> str:
    """A hub-style README.md: front matter, data, config, scores, usage."""
    cfg = source.config
    src, tgt = cfg.data.src_lang, cfg.data.tgt_lang
    manifest = _manifest_hashes(source)
    scores = _scores(source)
    config_yaml = _yaml(config_to_dict(cfg))
    arch = "MarianMTModel" if cfg.model.norm == "post" else "PegasusForConditionalGeneration"
    lines = [
        "---",
        "language:",
        f"- {src}",
        f"- {tgt}",
        "tags:",
        "- translation",
        "- nmt",
        f"- {arch}",
        "datasets:",
        *[f"- {name}" for name in splits_by_corpus(cfg.data)],  # with data.corpora: each
        "library_name: transformers",
        "pipeline_tag: translation",
        "---",
        "",
        f"# {cfg.name}: {src} -> {tgt}",
        "",
        f"A Transformer trained with nmt {__version__} and exported with "
        f"`nmt export --to huggingface` from `{source.path.name}` "
        f"(update {checkpoint_step(source.checkpoint)}), as a `{arch}`.",
        "",
        "## Training data",
        "",
        _corpora_sentence(cfg.data, src, tgt) + (" Files:" if manifest else ""),
        "",
        *[f"- `{name}`: sha256 `{digest}`" for name, digest in manifest],
        "",
        "## Test scores",
        "",
        *(scores or ["No `eval/results.json` was found next to the checkpoint."]),
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        'model = AutoModelForSeq2SeqLM.from_pretrained("PATH")',
        'batch = tokenizer(["Ein Hund rennt über die Wiese."], return_tensors="pt", padding=True)',
        "out = model.generate(**batch, max_new_tokens=64)  # beam size etc.: generation_config",
        "print(tokenizer.batch_decode(out, skip_special_tokens=True))",
        "```",
        "",
        "nmt's own settings and conventions (length rule, decoder start token, positions) "
        "are described in nmt/interop/huggingface.py.",
        "",
        "## Resolved nmt config",
        "",
        "```yaml",
        config_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _corpora_sentence(data, src: str, tgt: str) -> str:
    if not data.corpora:
        return f"Corpus `{data.corpus}`, {src} -> {tgt}."
    weighted = ", ".join(f"`{c.name}` (weight {c.weight:g})" for c in data.corpora)
    return f"Corpora {weighted}, {src} -> {tgt}; validated and tested on `{data.corpus}`."


def _run_dir(source: ExportSource) -> Path:
    folder = source.path.resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def _manifest_hashes(source: ExportSource) -> list[tuple[str, str]]:
    """(file, sha256) from the corpus manifest.json, looked up where the run found its data:
    data.data_dir as given, or relative to the directory `nmt train` ran in (the parent of
    runs/<name>)."""
    data = source.config.data
    roots = [Path(data.data_dir), _run_dir(source).parent.parent / data.data_dir]
    for root in roots:
        try:
            manifest = json.loads((root / data.corpus / "manifest.json").read_text("utf-8"))
            files = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return [
            (name, info["sha256"])
            for name, info in sorted(files.items())
            if isinstance(info, dict) and isinstance(info.get("sha256"), str)
        ]
    return []


def _scores(source: ExportSource) -> list[str]:
    """Markdown rows of the run's eval/results.json (nmt evaluate / nmt run): each split's
    cased and lowercased scores with their sacreBLEU signatures."""
    path = _run_dir(source) / "eval" / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        entries = results["results"] if isinstance(results, dict) else results
    except (OSError, ValueError, KeyError, TypeError):
        return []
    rows = ["| split | metric | score | sacreBLEU signature |", "|---|---|---|---|"]
    for entry in entries if isinstance(entries, list) else []:
        for case in ("cased", "lowercased"):
            metrics = entry.get(case) if isinstance(entry, dict) else None
            for metric, value in (metrics or {}).items():
                if isinstance(value, dict) and "score" in value:
                    name = metric if case == "cased" else f"{metric} (lowercased)"
                    rows.append(
                        f"| {entry.get('split', '?')} | {name} | {value['score']:.2f} "
                        f"| `{_cell(value.get('signature', ''))}` |"
                    )
    if len(rows) == 2:
        return []
    return [f"From `{path.name}` of the run (beam {results.get('beam_size', '?')}):", ""] + rows


def _cell(text: str) -> str:
    """A sacreBLEU signature (a|b|c) inside a Markdown table cell: pipes escaped."""
    return str(text).replace("|", "\\|")


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
