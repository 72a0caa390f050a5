"""Organ attribute vocabularies: canonical values, accepted synonyms, question phrasings, phantom render hints.

The YAML files in `schemas/vocab/` are the single source, and the organ list IS that folder: adding an
attribute or an organ is a YAML change, and ingest, label configs, consensus, the teacher, the release gate
and status take it from there. `LOOKCLOSER_VOCAB_DIR` points at another folder (a site's own organs, or a
test's). Input values (from sources, readers, the teacher) are normalised here.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from schemas.environment import ENV_PREFIX

DEFAULT_VOCAB_DIR = Path(__file__).parent / "vocab"
VOCAB_DIR_VARIABLE = f"{ENV_PREFIX}VOCAB_DIR"


def vocab_dir() -> Path:
    """The vocabulary folder: `LOOKCLOSER_VOCAB_DIR`, or the one shipped in `schemas/vocab/`."""
    configured = os.environ.get(VOCAB_DIR_VARIABLE)
    return Path(configured) if configured else DEFAULT_VOCAB_DIR


def registered_organs() -> tuple[str, ...]:
    """The registered organs: one per YAML file of the vocabulary folder, sorted by name."""
    return _organs_in(vocab_dir())


@cache
def _organs_in(folder: Path) -> tuple[str, ...]:
    found = tuple(sorted(path.stem for path in folder.glob("*.yaml")))
    if not found:
        raise VocabularyError(f"no organ vocabulary (*.yaml) in {folder} ({VOCAB_DIR_VARIABLE})")
    return found


def _match_key(text: str) -> str:
    """Case- and punctuation-insensitive key: 'Hypo-echoic' and 'hypoechoic' match."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


class VocabularyError(ValueError):
    """A value, attribute or organ that the vocabulary does not know."""


class AttributeValue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    synonyms: tuple[str, ...] = ()
    render: dict[str, Any] = Field(default_factory=dict)  # phantom rendering hints only
    evidence: tuple[str, ...] = ()  # visual evidence for this value, for a prompt bundle without guidance here


class Attribute(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    answer_key: str
    required: bool = True
    questions: tuple[str, ...]
    look_for: str | None = None  # what the search step examines, for a prompt bundle without guidance here
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


class _Hint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TissueGland(_Hint):
    """A gland: an ellipse of tissue brighter (or darker) than what surrounds it."""

    centre: tuple[float, float]  # x, y as fractions of the image width, height
    half_axes: tuple[float, float]  # fractions of the image width, height
    inside: float  # echo factor inside the ellipse
    outside: float  # echo factor outside it


class TissueVessels(_Hint):
    """A few round vessels (anechoic: blood), squashed vertically as a probe sees them across."""

    count: tuple[int, int]  # fewest, most (inclusive)
    radius: tuple[float, float]  # pixels
    depth: tuple[float, float]  # where their centres lie, as fractions of the image height
    squash: float = 1.4  # vertical compression of the circle
    echo: float = 0.04


class TissueBand(_Hint):
    """One depth band (a layer: skin, fat, muscle) and its echo level; a missing edge means the image's edge."""

    above: float | None = None  # top edge, as a fraction of the image height
    below: float | None = None  # bottom edge
    echo: float


class TissueBands(_Hint):
    """Layers across the image; with a `wave`, their edges undulate together from side to side."""

    wave: float = 0.0  # amplitude of the undulation, as a fraction of the image height
    levels: tuple[TissueBand, ...]


class PhantomHints(_Hint):
    """How the phantom source draws this organ's background tissue (`flows/ingest/sources/phantom.py`).

    Drawn in this order over a plain, softly varying parenchyma: the gland, the vessels, the bands.
    """

    gland: TissueGland | None = None
    vessels: TissueVessels | None = None
    bands: TissueBands | None = None


class TeacherWords(BaseModel):
    """How the teacher's prose names the organ's tissue and its lesions (for a bundle without organ words)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str  # e.g. "thyroid lobe"
    structure: str  # e.g. "nodule"


class OrganVocabulary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    organ: str
    standard: str
    test_only: bool = False  # cross-domain: every image goes to the test split (the paper's thyroid set)
    dicom_body_parts: tuple[str, ...] = ()  # BodyPartExamined codes that mean this organ
    phantom: PhantomHints = PhantomHints()
    words: TeacherWords | None = None
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
    return OrganVocabulary(**{**data, "attributes": attributes})


def load_vocabulary(organ: str) -> OrganVocabulary:
    """The vocabulary of one organ, read from `{vocab_dir()}/{organ}.yaml`."""
    return _load(vocab_dir(), organ)


@cache
def _load(folder: Path, organ: str) -> OrganVocabulary:
    path = folder / f"{organ}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise VocabularyError(f"unknown organ {organ!r}; known: {known}")
    vocabulary = _parse(yaml.safe_load(path.read_text()))
    if vocabulary.organ != organ:
        raise VocabularyError(f"{path.name} declares the organ {vocabulary.organ!r}; the file name must be the organ")
    return vocabulary


def cross_domain_organs() -> tuple[str, ...]:
    """Organs whose images are all test images (cross-domain evaluation)."""
    return tuple(organ for organ in registered_organs() if load_vocabulary(organ).test_only)


def dicom_body_part_organs() -> dict[str, str]:
    """DICOM BodyPartExamined code → organ, from every vocabulary's `dicom_body_parts`."""
    return {code: organ for organ in registered_organs() for code in load_vocabulary(organ).dicom_body_parts}


def normalize_value(organ: str, attribute: str, raw: str) -> str:
    """Canonical value of `raw` for organ × attribute, or a VocabularyError listing what is allowed."""
    return load_vocabulary(organ).normalize(attribute, raw)
