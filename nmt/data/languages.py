"""What nmt needs to know about a language's script: the one home of the per-language rules.

Chinese, Japanese and Korean are written with large character sets (thousands of Han
ideographs, kana, Hangul syllables) in which one character carries about as much as a short
English word does: newstest2017 zh-en has a median of 3.8 English characters per Han
character. Chinese and Japanese put no spaces between words at all. Thai also writes no
spaces between words, but with an alphabet of some 70 letters and marks, so its characters
weigh about what Latin letters do.

Language codes are compared by their primary subtag, lower-cased: `zh`, `zh-CN`, `zh_Hant`
and `ZH` are all Chinese.
"""

from __future__ import annotations

import re

# SentencePiece's recommendation (its README, `--character_coverage`): "0.9995 for languages
# with rich character set like Japanese or Chinese and 1.0 for other languages with small
# character set". Korean is written in Hangul syllables (11,172 possible, a few thousand in
# use), a rich character set in the same sense; Cantonese (yue) is written in Han characters.
RICH_CHARACTER_SET_LANGUAGES = frozenset({"zh", "ja", "ko", "yue"})
RICH_CHARACTER_COVERAGE = 0.9995
SMALL_CHARACTER_COVERAGE = 1.0

# Han ideographs (unified, extension A, compatibility, and the supplementary planes' extensions
# B onwards), hiragana, katakana (with its phonetic extensions and half-width forms) and
# Hangul (syllables, jamo and compatibility jamo).
_WIDE_LETTER = re.compile(
    "["
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"  # Han
    "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"  # kana
    "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"  # Hangul
    "]"
)
# How many length units one such letter counts for; every other character counts one. 3 is
# a little under the zh-en median above (3.8), so an ordinary Chinese sentence measures about
# as long as its English translation and `data.max_length_ratio` keeps its meaning.
WIDE_LETTER_UNITS = 3


def primary_language(code: str) -> str:
    """`zh-CN` -> `zh`: the primary subtag of a language code, lower-cased."""
    return re.split(r"[-_]", code.strip(), maxsplit=1)[0].lower()


def default_character_coverage(*languages: str) -> float:
    """SentencePiece character coverage for a model trained on text of `languages` (both
    sides for a joint vocabulary): 0.9995 when any of them has a rich character set, else 1.0
    (every character of an alphabet gets its own piece)."""
    rich = any(primary_language(lang) in RICH_CHARACTER_SET_LANGUAGES for lang in languages)
    return RICH_CHARACTER_COVERAGE if rich else SMALL_CHARACTER_COVERAGE


def length_units(text: str) -> int:
    """The length of `text` for comparing a sentence with its translation: characters, with
    each Han ideograph, kana or Hangul letter counting WIDE_LETTER_UNITS. "28岁厨师" is
    2 + 3 * 3 = 11 units."""
    if text.isascii():  # the common case, without a regex scan
        return len(text)
    return len(text) + (WIDE_LETTER_UNITS - 1) * len(_WIDE_LETTER.findall(text))


# Languages written without spaces between words (Korean spaces its words; Thai, also
# unspaced, has no SentencePiece problem: see `without_spurious_spaces`).
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "yue"})
# Han, kana, CJK symbols and punctuation (U+3000-303F: 、。「」), full-width forms (，：？),
# and the general punctuation Chinese text writes unspaced (“” ‘’ … —: newstest2017.zh has
# 813 of “” beside a Han character, none with a space between).
_UNSPACED_CHARACTER = (
    "[\u2014\u2018\u2019\u201c\u201d\u2026"
    "\u3000-\u303f\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]"
)
_SPACE_BETWEEN_UNSPACED = re.compile(f"(?<={_UNSPACED_CHARACTER}) +(?={_UNSPACED_CHARACTER})")


def without_spurious_spaces(text: str, language: str | None) -> str:
    """Decoded text of `language` without spaces between two Chinese or Japanese characters.

    SentencePiece marks a word start with "▁" and puts one before every sentence (its dummy
    prefix), so a Chinese vocabulary holds "▁" and pieces such as "▁据" learned at sentence
    starts; a model that emits one mid-sentence decodes to "我们 据他". Chinese and Japanese
    text has no such spaces (newstest2017.zh: 10 of 2001 lines, all at brackets), so for
    those languages they are removed; a space beside a Latin word or a digit ("使用 iPhone")
    is real and stays. Other languages' text is returned as it is.
    """
    if language is None or primary_language(language) not in UNSPACED_LANGUAGES:
        return text
    return _SPACE_BETWEEN_UNSPACED.sub("", text)
