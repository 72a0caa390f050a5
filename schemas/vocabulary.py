"""Organ attribute vocabularies: canonical values, accepted synonyms, question phrasings.

The YAML files in `schemas/vocab/` are the single source; adding an attribute or an organ is a
YAML change. Input values (from sources, readers, the teacher) are normalised here.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

VOCAB_DIR = Path(__file__).parent / "vocab"
ORGANS: tuple[str, ...] = ("breast", "liver", "thyroid")


def _match_key(text: str) -> str:
    """Case- and punctuation-insensitive key: 'Hypo-echoic' and 'hypoechoic' match."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


class VocabularyError(ValueError):
    """A value, attribute or organ that the vocabulary does not know."""


class AttributeValue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    synonyms: tuple[str, ...] = ()
    render: dict[str, Any] = Field(default_factory=dict)  # phantom rendering hints only


class Attribute(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    answer_key: str
    required: bool = True
    questions: tuple[str, ...]
    values: dict[str, AttributeValue]

    @property
    def canonical_values(self) -> list[str]:
        return list(self.values)

    def normalize(self, raw: str) -> str:
        """Map a raw value (canonical or synonym, any case) to its canonical value."""
        key = _match_key(str(raw))
        for canonical, spec in self.values.items():
            if key == _match_key(canonical) or key in {_match_key(s) for s in spec.synonyms}:
                return canonical
        allowed = "; ".join(f"{c} (synonyms: {', '.join(s.synonyms) or '-'})" for c, s in self.values.items())
        raise VocabularyError(f"{raw!r} is not a value of attribute {self.name!r}; allowed: {allowed}")


class OrganVocabulary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    organ: str
    standard: str
    attributes: dict[str, Attribute]

    def attribute(self, name: str) -> Attribute:
        try:
            return self.attributes[name]
        except KeyError:
            raise VocabularyError(
                f"organ {self.organ!r} has no attribute {name!r}; known: {', '.join(self.attributes)}"
            ) from None

    def normalize(self, attribute: str, raw: str) -> str:
        return self.attribute(attribute).normalize(raw)


def _parse(data: dict[str, Any]) -> OrganVocabulary:
    attributes = {
        name: Attribute(name=name, **{**spec, "values": {str(k): v or {} for k, v in spec["values"].items()}})
        for name, spec in data["attributes"].items()
    }
    return OrganVocabulary(organ=data["organ"], standard=data["standard"], attributes=attributes)


@cache
def load_vocabulary(organ: str) -> OrganVocabulary:
    """The vocabulary of one organ, read from `schemas/vocab/{organ}.yaml`."""
    path = VOCAB_DIR / f"{organ}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in VOCAB_DIR.glob("*.yaml")))
        raise VocabularyError(f"unknown organ {organ!r}; known: {known}")
    return _parse(yaml.safe_load(path.read_text()))


def normalize_value(organ: str, attribute: str, raw: str) -> str:
    """Canonical value of `raw` for organ × attribute, or a VocabularyError listing what is allowed."""
    return load_vocabulary(organ).normalize(attribute, raw)
