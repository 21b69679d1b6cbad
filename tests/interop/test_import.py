"""`nmt import huggingface`: a transformers Marian directory becomes an nmt checkpoint that
computes the same model.

Random-weight OPUS-MT-style directories (_marian.py: vocab ids unlike SentencePiece's, PAD
as decoder start, swish, a final_logits_bias; shared and separate vocabularies, tied and
untied output, pieces missing from the vocabulary) on real Multi30k sentences:
  * tokenization: nmt's source ids, mapped through the import's row table, are the
    MarianTokenizer's ids;
  * log-probabilities of nmt and transformers over the whole vocabulary agree within 1e-4
    (teacher forcing on nmt's beam outputs);
  * greedy and beam-5 outputs of nmt and generate() on every sentence are the same tokens
    (>= 99 %; every line that differs is printed with its score gap under nmt's model, which
    must be < 1e-4, a near-tie) and the same text: the models end every search on their own
    before the length limit (_marian.py), and a fixture checks that premise.
Round trip: import(export(x)) == x (tensors, config, SentencePiece bytes, translations) for
every variant the transformers export writes (Marian for post-norm, Pegasus for pre-norm).
"""

from __future__ import annotations

import json

import pytest
import torch
from _marian import Opus, make_marian_dir
from _models import VARIANTS, make_checkpoint
from _searches import TOLERANCE, compare_outputs, pad, reached_limit

from nmt.checkpoint import load_checkpoint, load_trained_model
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decoding.engine import Engine
from nmt.decoding.options import DecodeOptions
from nmt.interop.huggingface import export_huggingface
from nmt.interop.importer import _tokenizer_settings, import_command, marian_orders
from nmt.interop.source import load_source

SENTENCES = 100
BEAMS = (1, 5)
MAX_NEW = 40  # nmt: max_len_a 0, max_len_b MAX_NEW; generate(): max_new_tokens MAX_NEW
# Frequent pieces of both sides' SentencePiece models, left out of the second vocabulary.
MISSING = ("▁Ein", "▁Mann", "▁mit", "▁A", "▁man", "▁with")
OPUS = [Opus(shared=True, tie=True), Opus(shared=False, tie=False, missing=MISSING)]


@pytest.fixture(scope="module", params=OPUS, ids=lambda v: v.name)
def imported(request, tmp_path_factory, spm_models):
    """(marian dir, imported checkpoint, transformers model, tokenizer, (src, tgt) orders)."""
    from transformers import MarianMTModel, MarianTokenizer

    root = tmp_path_factory.mktemp(request.param.name)
    directory = make_marian_dir(root / "opus", request.param, spm_models)
    checkpoint = root / "imported.pt"
    import_command(directory, checkpoint)
    model = MarianMTModel.from_pretrained(directory).eval()
    tokenizer = MarianTokenizer.from_pretrained(directory)
    orders = marian_orders(directory, model.config, _tokenizer_settings(directory))
    return directory, checkpoint, model, tokenizer, orders


@pytest.fixture(scope="module")
def sentences(test_sentences) -> list[str]:
    return test_sentences[:SENTENCES]


@pytest.fixture(scope="module")
def searched(imported, sentences):
    """(translator, {beam: nmt's Translation with 1-best lists}) for greedy and beam 5, once
    the premise of the comparisons is checked: no search reached the length limit (where
    generate() cuts a hypothesis and nmt ends it with EOS, see test_equivalence), which the
    models of _marian.py ensure by making EOS more likely the longer a hypothesis gets."""
    translator = Engine.from_checkpoint(imported[1], DecodeOptions(max_len_a=0, max_len_b=MAX_NEW))
    best = {}
    for beam in BEAMS:
        result = translator.with_options(DecodeOptions(beam_size=beam, n_best=beam)).translate(
            sentences
        )
        nbest = result.hypotheses
        reached = [i for i, h in enumerate(nbest) if reached_limit(h, MAX_NEW, beam)]
        assert not reached, f"beam {beam}: the searches of lines {reached} reached the limit"
        best[beam] = result
    return translator, best


def test_tokenization_is_the_marian_tokenizers(imported, sentences):
    _, checkpoint, _, tokenizer, (src_order, _) = imported
    nmt_tokenizer = load_trained_model(checkpoint)[1]
    nmt_ids = [s + [EOS_ID] for s in nmt_tokenizer.encode_src(sentences)]
    mapped = [[src_order.rows[i] for i in row] for row in nmt_ids]
    assert mapped == tokenizer(sentences).input_ids


def _kept(order) -> torch.Tensor:
    """nmt ids whose rows are in Marian's softmax: all but BOS (a copy of PAD, the decoder
    start) and the aliases of UNK (pieces the vocabulary lacks)."""
    keep = torch.ones(len(order.rows), dtype=torch.bool)
    keep[BOS_ID] = False
    keep[len(order.rows) - order.aliases :] = False
    return keep


def test_log_probs_agree(imported, searched, sentences):
    """Every target position of nmt's beam outputs, every vocabulary entry (nmt's BOS, a
    copy of PAD that Marian does not have, and the aliases of UNK are out of the softmax:
    below -100)."""
    _, _, hf, _, (src_order, tgt_order) = imported
    translator, best = searched
    hyps = [h[0].tokens for h in best[5].hypotheses]
    src = pad([s + [EOS_ID] for s in translator.tokenizer.encode_src(sentences)], PAD_ID)
    tgt = pad([[BOS_ID] + h for h in hyps], PAD_ID)
    src_rows, tgt_rows = torch.tensor(src_order.rows), torch.tensor(tgt_order.rows)
    with torch.inference_mode():
        nmt = torch.log_softmax(translator.model(src, tgt).float(), -1)
        hf_src = src_rows[src].masked_fill(src.eq(PAD_ID), hf.config.pad_token_id)
        logits = hf(
            input_ids=hf_src, attention_mask=src.ne(PAD_ID).long(), decoder_input_ids=tgt_rows[tgt]
        ).logits
        theirs = torch.log_softmax(logits, -1)
    real = tgt.ne(PAD_ID)
    real[:, 0] = True
    keep = _kept(tgt_order)
    assert (nmt[..., keep] - theirs[..., tgt_rows[keep]]).abs()[real].max() < TOLERANCE
    assert nmt[..., ~keep][real].max() < -100


@pytest.mark.parametrize("beam", BEAMS)
def test_outputs_identical(imported, searched, sentences, beam):
    """generate(num_beams=beam) with nmt's rules (length penalty 1 over the tokens, EOS
    included; stop once `beam` hypotheses finished; PAD suppressed; at least one token) on
    every sentence: the same tokens as nmt's (_searches.compare_outputs: >= 99 %, the rest
    near-ties) and, where the tokens are the same, the same text."""
    _, _, hf, tokenizer, (_, tgt_order) = imported
    translator, best = searched
    batch = tokenizer(sentences, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = hf.generate(
            **batch,
            num_beams=beam,
            max_new_tokens=MAX_NEW,
            length_penalty=1.0,
            min_new_tokens=1,
            **({"early_stopping": True} if beam > 1 else {}),  # a beam-search flag
            suppress_tokens=[hf.config.pad_token_id],
            do_sample=False,
        )
    rows = out[:, 1:].tolist()  # after the decoder start
    eos = hf.config.eos_token_id
    assert all(eos in row for row in rows)  # generate()'s searches ended too
    to_nmt = _inverse(tgt_order.rows, _kept(tgt_order))
    theirs = [[to_nmt[i] for i in row[: row.index(eos)]] for row in rows]
    mine = [h[0].tokens for h in best[beam].hypotheses]
    src = translator.tokenizer.encode_src(sentences)
    compare_outputs(f"marian beam {beam}", translator.model, src, mine, theirs)
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    same = [i for i in range(len(mine)) if mine[i] == theirs[i]]
    assert [best[beam].best[i] for i in same] == [texts[i] for i in same]


def _inverse(rows: list[int], keep: torch.Tensor) -> dict[int, int]:
    """transformers id -> nmt id, over the nmt ids in the softmax (`keep`)."""
    return {row: i for i, row in enumerate(rows) if keep[i] and row >= 0}


def test_checkpoint_is_a_release_checkpoint(imported):
    directory, checkpoint, hf, _, _ = imported
    state = load_checkpoint(checkpoint)
    assert not {"optimizer", "scheduler", "train_state", "rng"} & set(state)
    assert state["imported"]["model_type"] == "marian"
    model = state["config"]["model"]
    assert (model["activation"], model["norm"], model["output_bias"]) == ("swish", "post", True)
    assert model["share_embeddings"] == hf.config.share_encoder_decoder_embeddings
    assert state["config"]["data"]["src_lang"] == "de"
    # the random final_logits_bias, in nmt's row order
    order = marian_orders(directory, hf.config, _tokenizer_settings(directory))[1]
    expected = hf.final_logits_bias[0][torch.tensor(order.rows)]
    expected[BOS_ID] -= 100  # the copied row and the aliases: out of the softmax
    expected[len(order.rows) - order.aliases :] -= 100
    assert torch.equal(state["model"]["output.bias"], expected)


# --------------------------------------------------------------------------- round trip

# Every variant `nmt export --to huggingface` writes: Marian (post-norm), Pegasus (pre-norm,
# one vocabulary).
EXPORTED = [v for v in VARIANTS if v.norm == "post" or v.joint]


@pytest.mark.parametrize("variant", EXPORTED, ids=lambda v: v.name)
def test_import_of_an_export_is_the_model(variant, tmp_path, spm_models, test_sentences):
    original = make_checkpoint(tmp_path / "model.pt", variant, spm_models)
    source = load_source(original)
    (tmp_path / "hf").mkdir()
    export_huggingface(source, tmp_path / "hf")
    back = tmp_path / "back.pt"
    import_command(tmp_path / "hf", back)
    before, after = load_checkpoint(original), load_checkpoint(back)
    assert after["config"]["model"] == before["config"]["model"]
    assert set(after["model"]) == set(before["model"])
    for name, tensor in before["model"].items():
        assert torch.equal(after["model"][name], tensor), name
    for side in ("src", "tgt"):
        assert torch.equal(after["spm"][side], before["spm"][side])
    assert after["fingerprint"]["tokenizer"] == before["fingerprint"]["tokenizer"]
    lines = test_sentences[:20]
    search = dict(beam_size=5, max_len_a=0.5, max_len_b=5)  # the decode section is nmt's default
    outputs = [
        Engine.from_checkpoint(path, DecodeOptions(**search)).translate(lines).texts
        for path in (original, back)
    ]
    assert outputs[0] == outputs[1]


def test_import_reads_the_tokenizer_languages_and_the_options(tmp_path, spm_models):
    directory = make_marian_dir(tmp_path / "opus", OPUS[0], spm_models)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    assert (config["source_lang"], config["target_lang"]) == ("de", "en")
    out = tmp_path / "x.pt"
    message = import_command(directory, out, src_lang="deu", tgt_lang="eng")
    assert "deu -> eng" in message
    assert load_checkpoint(out)["config"]["data"]["tgt_lang"] == "eng"


def test_pieces_missing_from_the_vocabulary_are_read_as_unk(imported, sentences):
    """The separate variant lacks MISSING: MarianTokenizer gives <unk>'s id for them, nmt an
    alias id whose rows copy <unk>'s (and that never comes out of a search)."""
    directory, checkpoint, _, tokenizer, (src_order, tgt_order) = imported
    if not load_checkpoint(checkpoint)["config"]["model"]["share_embeddings"]:
        assert src_order.aliases and tgt_order.aliases
        assert set(src_order.pieces[-src_order.aliases :]) <= set(MISSING)
        unk = tokenizer.convert_tokens_to_ids("<unk>")
        assert sum(row.count(unk) for row in tokenizer(sentences).input_ids) >= len(sentences)
    else:
        assert src_order.aliases == tgt_order.aliases == 0
