"""Registry of known corpora: which splits and languages exist, and where each lives online.

Three kinds of source:
- `UrlCorpus`: the corpus's own release files, one (optionally gzipped) text file per
  split and language (Multi30k);
- `SacrebleuCorpus`: WMT test sets fetched through sacreBLEU's own downloader;
- `HubCorpus`: any Hugging Face hub translation dataset, `hf:<name>[:<config>]`, read with
  `datasets.load_dataset` (imported lazily: GPU machines may not have it).
User files registered with `nmt download NAME --src F --tgt F` need no registry entry.

An offline mirror directory has the layout `<mirror>/<mirror_path>/<split>.<lang>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nmt.errors import DataError


@dataclass(frozen=True)
class CorpusSpec:
    """What a corpus offers. `languages_by_split` lists the languages each split has."""

    name: str
    languages_by_split: dict[str, tuple[str, ...]]
    description: str = ""
    mirror_path: str = ""  # sub-directory inside a mirror; defaults to the name

    @property
    def splits(self) -> list[str]:
        return list(self.languages_by_split)

    @property
    def languages(self) -> list[str]:
        seen: dict[str, None] = {}
        for langs in self.languages_by_split.values():
            seen.update(dict.fromkeys(langs))
        return list(seen)

    @property
    def mirror_dir(self) -> str:
        return self.mirror_path or self.name

    def check(self, splits: list[str], languages: list[str]) -> None:
        """Raise a DataError listing the valid choices when a split/language is unknown."""
        for split in splits:
            if split not in self.languages_by_split:
                raise DataError(
                    f"corpus {self.name!r} has no split {split!r}; "
                    f"valid splits: {', '.join(self.splits)}"
                )
        for lang in languages:
            if lang not in self.languages:
                raise DataError(
                    f"corpus {self.name!r} has no language {lang!r}; "
                    f"valid languages: {', '.join(self.languages)}"
                )
        for split in splits:
            missing = [lang for lang in languages if lang not in self.languages_by_split[split]]
            if missing:
                have = ", ".join(self.languages_by_split[split])
                raise DataError(
                    f"corpus {self.name!r} split {split!r} has no {', '.join(missing)}; "
                    f"it has: {have}"
                )


@dataclass(frozen=True)
class UrlCorpus(CorpusSpec):
    url_template: str = ""  # formatted with split= and lang=

    def url(self, split: str, lang: str) -> str:
        return self.url_template.format(split=split, lang=lang)


@dataclass(frozen=True)
class SacrebleuCorpus(CorpusSpec):
    """Splits map to sacreBLEU test-set names; the language pair is fixed."""

    testsets: dict[str, str] = field(default_factory=dict)
    langpair: str = ""


@dataclass(frozen=True)
class HubCorpus(CorpusSpec):
    """A Hugging Face hub dataset; splits and languages are discovered when loading."""

    dataset: str = ""
    config: str | None = None


_M30K_ALL = ("en", "de", "fr", "cs")
_M30K_NO_CS = ("en", "de", "fr")

MULTI30K = UrlCorpus(
    name="multi30k",
    description="Multi30k task 1: Flickr30k captions in en/de/fr/cs (WMT16-18 multimodal)",
    languages_by_split={
        "train": _M30K_ALL,
        "val": _M30K_ALL,
        "test_2016_flickr": _M30K_ALL,
        "test_2017_flickr": _M30K_NO_CS,
        "test_2018_flickr": _M30K_ALL,
        "test_2017_mscoco": _M30K_NO_CS,
    },
    url_template=(
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{split}.{lang}.gz"
    ),
)

_NEWSTEST_YEARS = range(2012, 2019)

WMT_NEWSTEST_DE_EN = SacrebleuCorpus(
    name="wmt_newstest",
    description="WMT news test sets 2012-2018, German-English (both directions)",
    languages_by_split={f"newstest{y}": ("de", "en") for y in _NEWSTEST_YEARS},
    mirror_path="wmt_newstest/de-en",
    # 2014 is the full set, as sacreBLEU's "wmt14/full"; the others are the official sets.
    testsets={
        f"newstest{y}": ("wmt14/full" if y == 2014 else f"wmt{y % 100}") for y in _NEWSTEST_YEARS
    },
    langpair="de-en",
)

REGISTRY: dict[str, CorpusSpec] = {c.name: c for c in (MULTI30K, WMT_NEWSTEST_DE_EN)}

HUB_PREFIX = "hf:"


def get_corpus(name: str) -> CorpusSpec:
    """Look a corpus up by name; `hf:<dataset>[:<config>]` names a Hugging Face dataset."""
    if name.startswith(HUB_PREFIX):
        dataset, _, config = name[len(HUB_PREFIX) :].partition(":")
        if not dataset:
            raise DataError(f"{name!r}: give a dataset name after 'hf:', e.g. hf:wmt/wmt14")
        return HubCorpus(name=name, languages_by_split={}, dataset=dataset, config=config or None)
    if name not in REGISTRY:
        raise DataError(
            f"unknown corpus {name!r}; known corpora: {', '.join(REGISTRY)}, "
            "hf:<dataset> for a Hugging Face dataset, or register files with --src/--tgt"
        )
    return REGISTRY[name]
