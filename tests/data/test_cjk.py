"""Scripts without word boundaries (Chinese, Japanese, Korean): BLEU's tokenizer, SentencePiece
character coverage, the length-ratio filter and detokenised output, on the real newstest
zh-en data (skipped where ../shared/data is absent).

Known answers: sacreBLEU's own API and command line with `-tok zh` / `-l en-zh`, counts
computed by hand, and the newstest2017 pairs themselves.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
from _cli import assert_clean_failure

from nmt.config import DataConfig, load_config
from nmt.data.clean import CleanStats, FilterSettings, drop_reason, filter_pairs, normalize
from nmt.data.languages import default_character_coverage, length_units, without_spurious_spaces
from nmt.data.prepare import spm_coverage
from nmt.evaluation.metrics import bleu_tokenizer, configured_bleu_tokenizer, score_lines

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("NMT_SHARED_DATA", REPO.parent / "shared" / "data"))
ZH_EN = SHARED_DATA / "wmt_newstest" / "zh-en"
HAN = re.compile(r"[\u4e00-\u9fff]")
# A space with a Han character or CJK punctuation on both sides.
SPACE_IN_CHINESE = re.compile(
    r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef] +[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"
)


@pytest.fixture(scope="module")
def newstest2017() -> tuple[list[str], list[str]]:
    """newstest2017 zh-en, normalised as `prepare` does: (Chinese lines, English lines)."""
    if not ZH_EN.is_dir():
        pytest.skip(f"needs {ZH_EN} (absent; set NMT_SHARED_DATA to the shared corpora)")
    return tuple(
        [
            normalize(line)
            for line in (ZH_EN / f"newstest2017.{lang}").read_text("utf-8").split("\n")[:-1]
        ]
        for lang in ("zh", "en")
    )


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- BLEU


def test_the_bleu_tokenizer_is_sacrebleus_default_for_the_target_language():
    """The choice `BLEU(trg_lang=...)` makes, by primary language subtag; a setting wins."""
    for lang, expected in [("zh", "zh"), ("zh-CN", "zh"), ("ZH_Hant", "zh"), ("ja", "ja-mecab")]:
        assert bleu_tokenizer(lang) == expected
    assert bleu_tokenizer("ko") == "ko-mecab"
    assert bleu_tokenizer("en") == bleu_tokenizer("de") == bleu_tokenizer(None) == "13a"
    assert bleu_tokenizer("zh", "13a") == "13a" and bleu_tokenizer("en", "char") == "char"
    for lang in ("zh", "en", "de", "cs"):  # ja and ko need MeCab to be built
        assert bleu_tokenizer(lang) == sacrebleu.BLEU(trg_lang=lang).tokenizer_signature


def test_the_config_chooses_the_tokenizer_and_refuses_unknown_ones():
    cfg = load_config(None, ["data.src_lang=en", "data.tgt_lang=zh"])
    assert cfg.eval.bleu_tokenize == "auto" and configured_bleu_tokenizer(cfg) == "zh"
    cfg = load_config(None, ["data.src_lang=en", "data.tgt_lang=zh", "eval.bleu_tokenize=char"])
    assert configured_bleu_tokenizer(cfg) == "char"
    assert configured_bleu_tokenizer(load_config(None)) == "13a"  # de-en
    with pytest.raises(Exception, match=r"eval\.bleu_tokenize: got 'spm'"):
        load_config(None, ["eval.bleu_tokenize=spm"])  # spm downloads a model: not offered


@pytest.fixture(scope="module")
def zh_hyp_ref(newstest2017, tmp_path_factory) -> tuple[Path, Path, list[str], list[str]]:
    """Real Chinese references and hypotheses made from them: some cut short, some with two
    halves swapped, one empty, so BLEU lands strictly between its extremes."""
    refs = newstest2017[0][:40]
    hyps = []
    for i, ref in enumerate(refs):
        half = len(ref) // 2
        hyps.append("" if i == 5 else ref[:-3] if i % 2 else ref[half:] + ref[:half])
    directory = tmp_path_factory.mktemp("zh")
    return write(directory / "hyp.zh", hyps), write(directory / "ref.zh", refs), hyps, refs


def test_chinese_output_is_scored_with_the_zh_tokenizer(zh_hyp_ref, cli_inline):
    """13a finds no word boundary in Chinese: each sentence would be one "word", so any
    change anywhere in it scores as a miss. nmt scores as `sacrebleu -l en-zh` does."""
    hyp, ref, hyps, refs = zh_hyp_ref
    result = cli_inline("evaluate", "--hyp", hyp, "--ref", ref, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "tok:zh" in report["bleu"]["signature"]
    assert report["bleu"]["score"] == sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score
    thirteen_a = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score
    assert report["bleu"]["score"] > 40 > thirteen_a  # 13a: only unchanged sentences match
    tool = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-l", "en-zh", "-w", "6"],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(tool.stdout)
    assert report["bleu"]["score"] == pytest.approx(record["score"], abs=5e-7)
    assert report["bleu"]["signature"] == record["signature"]
    # chrF works on characters: the tokenizer does not touch it
    assert report["chrf"]["score"] == sacrebleu.corpus_chrf(hyps, [refs]).score


def test_tokenize_option_overrides_and_the_signature_says_so(zh_hyp_ref, cli_inline):
    hyp, ref, hyps, refs = zh_hyp_ref
    result = cli_inline("evaluate", "--hyp", hyp, "--ref", ref, "--tokenize", "13a")
    assert result.returncode == 0, result.stderr
    bleu = sacrebleu.BLEU(tokenize="13a")
    lines = result.stdout.splitlines()
    assert lines[0] == str(bleu.corpus_score(hyps, [refs]))
    assert f"  signature: {bleu.get_signature()}" in lines and "tok:13a" in lines[1]


@pytest.mark.parametrize("name", ["spm", ""])  # "" was taken as auto (13a here), silently
def test_an_unknown_tokenizer_is_refused_by_the_option_type(zh_hyp_ref, cli_inline, name):
    """The choices are the option's type: the command line refuses the value and lists them."""
    hyp, ref, _, _ = zh_hyp_ref
    result = cli_inline("evaluate", "--hyp", hyp, "--ref", ref, "--tokenize", name)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    for fragment in ("--tokenize", f"{name!r} is not one of", "'auto', '13a', 'intl', 'zh'"):
        assert fragment in result.stderr, result.stderr


@pytest.mark.skipif(importlib.util.find_spec("MeCab") is not None, reason="MeCab is installed")
def test_japanese_without_mecab_names_the_package_to_install(tmp_path, cli_inline):
    hyp, ref = write(tmp_path / "hyp.ja", ["猫です。"]), write(tmp_path / "ref.ja", ["猫だ。"])
    result = cli_inline("evaluate", "--hyp", hyp, "--ref", ref)
    assert_clean_failure(result, "ja-mecab", 'pip install "sacrebleu[ja]"', "--tokenize")
    assert result.stdout == ""
    # the way out the message names works
    assert cli_inline("evaluate", "--hyp", hyp, "--ref", ref, "--tokenize", "char").returncode == 0


@pytest.mark.skipif(importlib.util.find_spec("MeCab") is not None, reason="MeCab is installed")
def test_training_into_japanese_without_mecab_is_refused_before_it_starts(tmp_path, cli_inline):
    """Validation BLEU would fail at the first validation, the test splits after training."""
    run_dir = tmp_path / "run"
    args = ("data.src_lang=en", "data.tgt_lang=ja", f"run_dir={run_dir}", "train.device=cpu")
    result = cli_inline("train", REPO / "configs" / "tiny.yaml", *args)
    assert_clean_failure(result, "ja-mecab", 'pip install "sacrebleu[ja]"')
    assert not run_dir.exists()
    ok = cli_inline("train", REPO / "configs" / "tiny.yaml", *args, "eval.bleu_tokenize=char")
    assert "no SentencePiece model" in ok.stderr  # it went on, to find no prepared data


def test_score_lines_uses_the_tokenizer_given():
    hyps, refs = ["我们 据他。"], ["我们据他。"]  # the zh tokenizer splits every Han character
    assert score_lines(hyps, refs, tokenize="zh")["bleu"].score == pytest.approx(100)
    assert score_lines(hyps, refs)["bleu"].score == 0  # 13a: two "words", neither matches


# --------------------------------------------------------------------------- coverage


def test_character_coverage_defaults_by_language():
    """SentencePiece's advice: 0.9995 for rich character sets, 1.0 for alphabets."""
    assert default_character_coverage("zh") == default_character_coverage("ja") == 0.9995
    assert default_character_coverage("ko") == default_character_coverage("zh-TW") == 0.9995
    assert default_character_coverage("de", "en") == default_character_coverage("th") == 1.0
    assert default_character_coverage("en", "zh") == 0.9995  # a joint model with Chinese
    auto = DataConfig(src_lang="zh", tgt_lang="en")
    assert auto.character_coverage is None
    assert spm_coverage(auto, "zh", "en") == spm_coverage(auto, "zh") == 0.9995
    assert spm_coverage(auto, "en") == 1.0
    explicit = DataConfig(src_lang="zh", tgt_lang="en", character_coverage=0.98)
    assert spm_coverage(explicit, "zh") == spm_coverage(explicit, "en") == 0.98


def test_configs_saved_before_the_defaults_by_language_still_load():
    """Checkpoints written before hold character_coverage 1.0 and no eval section."""
    from nmt.config import config_from_dict, config_to_dict

    old = config_to_dict(load_config(None))
    old["data"]["character_coverage"] = 1.0
    del old["eval"]
    cfg = config_from_dict(old)
    assert cfg.data.character_coverage == 1.0 and cfg.eval.bleu_tokenize == "auto"


# --------------------------------------------------------------------------- length ratio


def test_length_units_count_cjk_letters_three_times():
    assert length_units("A man .") == 7
    assert length_units("28岁厨师") == 2 + 3 * 3
    assert length_units("ひらがな、カタカナ") == 8 * 3 + 1  # the comma counts one
    assert length_units("한국어 문장") == 5 * 3 + 1
    assert length_units("Zoë") == 3 and length_units("ﾃｽﾄ") == 9  # half-width katakana


def test_the_length_ratio_keeps_ordinary_chinese_english_pairs(newstest2017):
    """By raw characters a zh-en pair has a ratio of about 3.4, so max_length_ratio 3.0
    dropped 1417 of newstest2017's 2001 pairs; in length units it drops only the one pair
    whose English says more than its Chinese does."""
    zh, en = newstest2017
    settings = FilterSettings()
    stats = CleanStats()
    kept = list(filter_pairs(zip(zh, en), settings, stats))
    assert stats.as_dict() == {"read": 2001, "kept": 2000, "dropped": {"length_ratio": 1}}
    assert (zh[1], en[1]) in kept  # 33 characters vs 117: ratio 3.5 by characters
    by_characters = sum(1 for z, e in zip(zh, en) if len(e) > 3 * len(z) and len(e) > 10)
    assert by_characters == 1417
    # the rule still drops a wrong pair: a short Chinese line beside a long English one
    assert drop_reason("这完全没问题。", en[1], settings) == "length_ratio"
    assert drop_reason(zh[1], en[1], settings) is None


# --------------------------------------------------------------------------- detokenising


def test_decoded_chinese_has_no_spaces_between_characters(newstest2017):
    """SentencePiece's "▁" (and pieces like "▁据" learnt at sentence starts) decode to
    spaces when a model emits them mid-sentence; output for zh has none between Chinese
    characters, while a space beside a Latin word stays."""
    from nmt.data.tokenizer import SpmSettings, Tokenizer, train_sentencepiece
    from nmt.decoding.backend import output_line

    zh, en = newstest2017
    lines = itertools.chain.from_iterable(zip(zh[:1000], en[:1000]))
    tok = Tokenizer(
        train_sentencepiece(lines, SpmSettings(vocab_size=2500, character_coverage=0.995))
    )
    pieces = [tok.tgt.id_to_piece(i) for i in range(tok.tgt_vocab_size)]
    assert "▁" in pieces  # every Chinese sentence starts with it
    ids = [tok.tgt.piece_to_id(p) for p in ["我", "▁", "的", "▁", "人", "。"]]
    assert tok.tgt.unk_id() not in ids
    raw = tok.decode_tgt([ids])[0]
    assert raw == "我 的 人。"
    assert output_line(raw, "zh") == "我的人。"
    assert output_line(raw, "en") == raw  # other languages' spaces are their own
    assert without_spurious_spaces("使用 iPhone 的 用户 ，", "zh-CN") == "使用 iPhone 的用户，"
    # quotes and ellipses of Chinese text (before: '他说：“ 你好 ”' kept both spaces)
    assert without_spurious_spaces("他 说 ： “ 你好 ” …… 。", "zh") == "他说：“你好”……。"
    assert without_spurious_spaces("他 说 “ Python ”", "zh") == "他说“ Python ”"
    assert not SPACE_IN_CHINESE.search(without_spurious_spaces(" ".join(zh[:50]), "zh"))
