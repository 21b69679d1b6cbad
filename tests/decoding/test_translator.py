"""Engine on a trained checkpoint: results independent of batching, beam 1 = greedy,
empty inputs skip the model, over-long inputs are truncated and searched within the
decoder's positions."""

from __future__ import annotations

import math

import pytest
import torch

from nmt.data.batching import collate
from nmt.data.clean import normalize
from nmt.data.text import read_lines
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decoding.engine import Engine, ListSequences
from nmt.decoding.options import DecodeOptions
from nmt.decoding.search import SearchSettings, beam_search, greedy_search


@pytest.fixture(scope="module")
def sources(tiny_run) -> list[str]:
    return read_lines(tiny_run.raw("test_2016_flickr", "de"))[:24]


@pytest.fixture(scope="module")
def translator(tiny_run) -> Engine:
    return Engine.from_checkpoint(tiny_run.checkpoint)


def test_one_sentence_per_batch_gives_the_batched_translations(tiny_run, translator, sources):
    batched = translator.translate(sources)
    alone = Engine.from_checkpoint(tiny_run.checkpoint)
    alone.batch_tokens = 1  # every sentence is wider than this: one sentence per batch
    single = alone.translate(sources)
    assert single.texts == batched.texts
    for a, b in zip(single.hypotheses, batched.hypotheses):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
    # Order is restored whatever the input order (batches are sorted by length).
    assert translator.translate(sources[::-1]).best == batched.best[::-1]
    assert any(batched.best) and len(set(batched.best)) > 1


def test_beam_search_with_one_beam_is_greedy_search(tiny_run, translator, sources):
    """On the trained model and a real padded batch, not only on a scripted decoder."""
    ids = translator.tokenizer.encode_src([normalize(s) for s in sources])
    src = collate(ListSequences(ids), None, list(range(len(ids)))).src_ids
    settings = SearchSettings(beam_size=1, length_penalty=1.0)
    ids_kw = dict(bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID)
    greedy = greedy_search(translator.model, src, settings, **ids_kw)
    beam = beam_search(translator.model, src, settings, **ids_kw)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    assert [g[0].score for g in greedy] == pytest.approx([b[0].score for b in beam], abs=1e-5)
    # The translator's beam 1 takes the greedy path and agrees too.
    one = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(beam_size=1)).translate(sources)
    assert one.best == translator.tokenizer.decode_tgt([g[0].tokens for g in greedy])


def test_nbest_lists_start_with_the_one_best(tiny_run, sources):
    one = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(beam_size=3)).translate(sources)
    two = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(beam_size=3, n_best=2))
    nbest = two.translate(sources)
    assert [texts[0] for texts in nbest.texts] == one.best
    for hyps in nbest.hypotheses:
        assert len(hyps) == 2 and hyps[0].score >= hyps[1].score


def test_empty_and_blank_inputs_give_empty_outputs_without_the_model(translator, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not run for empty inputs")

    monkeypatch.setattr(translator.model, "encode", no_model)
    result = translator.translate(["", "   ", "\t\u3000", "\ufeff"])
    assert result.best == ["", "", "", ""]
    assert result.texts == [[""]] * 4 and result.hypotheses == [[]] * 4
    assert (result.stats.sentences, result.stats.empty) == (4, 4)


def test_empty_lines_keep_their_place_among_real_ones(translator):
    lines = ["Ein Hund läuft.", "", "Zwei Kinder spielen.", " "]
    result = translator.translate(lines)
    assert result.best[1] == result.best[3] == ""
    assert result.best[0] == translator.translate([lines[0]]).best[0] != ""
    assert result.best[2] == translator.translate([lines[2]]).best[0] != ""
    assert result.stats.empty == 2


def test_an_overlong_input_is_truncated_counted_and_searched_within_positions(translator):
    long, short = " ".join(["Hund"] * 2000), "Ein Hund läuft."
    result = translator.translate([long, short])
    assert result.stats.truncated == 1 and result.stats.sentences == 2
    assert result.best[0] != ""  # truncated, never dropped
    positions = translator.model.cfg.max_positions
    assert len(result.hypotheses[0][0].tokens) + 1 <= positions
    # The short sentence in the same call keeps its own length limit and translation.
    assert result.best[1] == translator.translate([short]).best[0]


def test_truncation_keeps_the_first_max_input_tokens(translator):
    limit = translator.max_input_tokens
    ids = translator.tokenizer.encode_src([" ".join(["Hund"] * 2000)])
    assert len(ids[0]) > limit
    head = translator.translate_ids([list(ids[0][:limit])])
    full = translator.translate_ids(ids)
    assert (full.stats.truncated, head.stats.truncated) == (1, 0)
    assert full.texts == head.texts


def test_forced_long_outputs_stop_at_max_len_or_the_decoder_positions(tiny_run):
    """EOS banned (min_len): every output runs to its max_len, floor(a * src_len + b), or to
    model.max_positions for an input whose formula passes it."""
    translator = Engine.from_checkpoint(
        tiny_run.checkpoint, DecodeOptions(beam_size=1, min_len=10_000)
    )
    short = "Ein Hund läuft."
    result = translator.translate([" ".join(["Hund"] * 2000), short])
    s, positions = translator.settings, translator.model.cfg.max_positions
    short_len = len(translator.tokenizer.encode_src([short])[0]) + 1  # with EOS
    assert len(result.hypotheses[0][0].tokens) + 1 == positions
    expected = math.floor(s.max_len_a * short_len + s.max_len_b)
    assert len(result.hypotheses[1][0].tokens) + 1 == expected < positions


def test_with_options_shares_the_model_and_changes_only_the_search(tiny_run, translator, sources):
    from nmt.errors import NmtError

    greedy = translator.with_options(DecodeOptions(beam_size=1))
    assert greedy.model is translator.model and greedy.tokenizer is translator.tokenizer
    assert (greedy.settings.beam_size, translator.settings.beam_size) == (1, 2)
    assert greedy.settings.max_len_cap == translator.settings.max_len_cap
    lines = sources[:4]
    expected = (
        Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(beam_size=1))
        .translate(lines)
        .best
    )
    assert greedy.translate(lines).best == expected
    with pytest.raises(NmtError, match="n_best"):
        translator.with_options(DecodeOptions(n_best=3))


def test_nan_activations_are_refused_not_written_as_translations(tiny_run, sources):
    """Weights checked when read cannot hold a NaN; activations can (an overflow): the scores
    turn NaN and search picks arbitrary tokens, which must not come out as translations."""
    from nmt.errors import NmtError

    engine = Engine.from_checkpoint(tiny_run.checkpoint, DecodeOptions(device="cpu"))
    with torch.no_grad():
        engine.model.encoder_norm.weight[0] = float("nan")
    with pytest.raises(NmtError, match="NaN scores while decoding"):
        engine.translate(sources[:3])
    assert engine.translate(["", " "]).best == ["", ""]  # no model run, nothing to refuse
