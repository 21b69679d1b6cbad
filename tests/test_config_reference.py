"""docs/configuration.md is generated from the schema: it must be what the generator writes
now, and every field must carry the description it shows."""

from __future__ import annotations

import dataclasses
import runpy
import typing
from pathlib import Path

from nmt.config.schema import SECTIONS, CorpusWeight, Doc, ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "tools" / "config_reference.py"


def test_the_committed_reference_is_what_the_schema_generates():
    render = runpy.run_path(str(GENERATOR))["render"]
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render(), (
        "docs/configuration.md is stale: run `python tools/config_reference.py` and commit it"
    )


def test_every_field_has_a_one_line_description():
    missing = []
    for cls in [ExperimentConfig, CorpusWeight, *SECTIONS.values()]:
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if f.name in SECTIONS and cls is ExperimentConfig:
                continue  # a section: its class docstring describes it
            docs = [e for e in getattr(hints[f.name], "__metadata__", ()) if isinstance(e, Doc)]
            if len(docs) != 1 or not docs[0].text.strip() or "\n" in docs[0].text:
                missing.append(f"{cls.__name__}.{f.name}")
    assert missing == []
