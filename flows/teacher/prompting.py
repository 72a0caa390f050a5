"""The teacher's prompt bundle (`prompts/<version>/`) and the chat messages built from it.

A bundle is a folder whose name is the prompt version (e.g. `teacher-v1`): Jinja templates for the
system, user and repair messages, per-attribute guidance, few-shot exemplars per tone, the tone
lexicons and the template backend's phrases. The version goes into every `Rationale`, the cache key
and the dataset card; changing any file means a new folder, never an edit in place.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined
from pydantic import BaseModel, ConfigDict

import prompts
from schemas.vocabulary import load_vocabulary

PROMPTS_DIR = Path(prompts.__file__).parent
DEFAULT_PROMPT_VERSION = "teacher-v1"
RATIONALE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"search": {"type": "string"}, "diagnosis": {"type": "string"}},
    "required": ["search", "diagnosis"],
    "additionalProperties": False,
}


class PromptError(ValueError):
    """A prompt bundle that is missing or incomplete."""


class TeacherRequest(BaseModel):
    """Everything the teacher is told about one consensus record (no image bytes, no patient data)."""

    model_config = ConfigDict(frozen=True)

    item_key: str  # image_id:attribute
    image_id: str
    organ: str
    attribute: str
    question: str
    label: str
    confidence: int
    bbox_2d: tuple[int, int, int, int]  # model frame
    box: tuple[float, float, float, float]  # the record's box, original pixels
    model_size: tuple[int, int]  # (W', H')

    @property
    def tone(self) -> str:
        return "definitive" if self.confidence == 1 else "cautious"


@dataclass(frozen=True)
class PromptBundle:
    version: str
    system: Any  # jinja2.Template
    user: Any
    repair: Any
    guidance: dict[str, Any]
    exemplars: dict[str, Any]
    tone: dict[str, Any]
    template: dict[str, Any]
    _memo: dict[tuple, Any] = field(default_factory=dict, compare=False, repr=False)  # derived, per bundle

    def attribute_guidance(self, organ: str, attribute: str) -> dict[str, Any]:
        """The bundle's guidance for organ × attribute; for an organ the bundle does not know, the vocabulary's
        own (`look_for`, each value's `evidence`), so a new organ needs only its vocabulary file."""
        if attribute in self.guidance.get(organ, {}):
            return self.guidance[organ][attribute]
        spec = load_vocabulary(organ).attribute(attribute)
        if spec.look_for and all(value.evidence for value in spec.values.values()):
            return {
                "look_for": spec.look_for,
                "values": {v: {"evidence": list(s.evidence)} for v, s in spec.values.items()},
            }
        raise PromptError(f"prompt bundle {self.version} has no guidance for {organ}/{attribute}")

    def organ_words(self, organ: str) -> dict[str, str]:
        """How the template backend names the organ's tissue and lesions: the bundle's, else the vocabulary's."""
        if organ in self.template["organ_words"]:
            return dict(self.template["organ_words"][organ])
        words = load_vocabulary(organ).words
        if words is None:
            raise PromptError(f"prompt bundle {self.version} has no organ words for {organ} (vocabulary: words)")
        return words.model_dump()

    def value_terms(self, organ: str, attribute: str) -> dict[str, list[str]]:
        """value → every phrase that names it in prose: canonical name, vocabulary synonyms, guidance terms."""
        key = ("terms", organ, attribute)
        if key not in self._memo:
            spec = load_vocabulary(organ).attribute(attribute)
            guidance = self.attribute_guidance(organ, attribute)["values"]
            self._memo[key] = {
                value: [value, *spec.values[value].synonyms, *guidance.get(value, {}).get("terms", [])]
                for value in spec.values
            }
        return self._memo[key]

    def system_prompt(self, context: dict[str, Any]) -> str:
        """The system message; it depends on organ, attribute and c only, so it is rendered once for each."""
        key = ("system", context["organ"], context["attribute"], context["confidence"])
        if key not in self._memo:
            self._memo[key] = self.system.render(**context)
        return self._memo[key]

    def evidence(self, organ: str, attribute: str, label: str) -> list[str]:
        values = self.attribute_guidance(organ, attribute)["values"]
        if label not in values:
            raise PromptError(f"prompt bundle {self.version} has no evidence for {organ}/{attribute}={label}")
        return list(values[label]["evidence"])

    def exemplars_for(self, tone: str, seed: int) -> list[dict[str, str]]:
        """`per_request` exemplars of the tone; the seed picks which, so a regeneration sees another set."""
        pool = list(self.exemplars[tone])
        random.Random(f"{self.version}|{tone}|{seed}").shuffle(pool)
        return pool[: int(self.exemplars["per_request"])]


@cache
def load_prompt_bundle(version: str = DEFAULT_PROMPT_VERSION) -> PromptBundle:
    """Load and check `prompts/<version>/`; PromptError names what is missing."""
    folder = PROMPTS_DIR / version
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*-v\d+", version) or not folder.is_dir():
        known = ", ".join(sorted(p.name for p in PROMPTS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")))
        raise PromptError(f"unknown prompt version {version!r}; known: {known}")
    env = Environment(
        undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False
    )  # prompts are plain text, not HTML
    texts = {}
    for name in ("system", "user", "repair"):
        path = folder / f"{name}.jinja"
        if not path.is_file():
            raise PromptError(f"prompt bundle {version} lacks {path.name}")
        texts[name] = env.from_string(path.read_text())
    data = {}
    for name in ("guidance", "exemplars", "tone", "template"):
        path = folder / f"{name}.yaml"
        if not path.is_file():
            raise PromptError(f"prompt bundle {version} lacks {path.name}")
        data[name] = yaml.safe_load(path.read_text())
    return PromptBundle(version=version, **texts, **data)


def box_location(bbox_2d: tuple[int, int, int, int], size: tuple[int, int]) -> str:
    """Where the box's centre lies in a 3×3 grid of the image, in words ("upper left", "centre")."""
    cx, cy = (bbox_2d[0] + bbox_2d[2]) / 2 / size[0], (bbox_2d[1] + bbox_2d[3]) / 2 / size[1]
    row = ("upper", "middle", "lower")[min(int(cy * 3), 2)]
    col = ("left", "middle", "right")[min(int(cx * 3), 2)]
    if row == col == "middle":
        return "centre"
    if row == "middle":
        return f"middle {col}"
    return f"{row} {col}" if col != "middle" else f"{row} middle"


def box_size_word(bbox_2d: tuple[int, int, int, int], size: tuple[int, int], sizes: dict[str, float]) -> str:
    share = (bbox_2d[2] - bbox_2d[0]) * (bbox_2d[3] - bbox_2d[1]) / (size[0] * size[1])
    return next((word for word, upper in sizes.items() if share <= upper), list(sizes)[-1])


def render_messages(
    bundle: PromptBundle, request: TeacherRequest, *, seed: int, image_urls: tuple[str, str]
) -> list[dict[str, Any]]:
    """System + user messages of one teacher request: the full image, the crop and the filled templates."""
    guidance = bundle.attribute_guidance(request.organ, request.attribute)
    terms = [t for phrases in bundle.value_terms(request.organ, request.attribute).values() for t in phrases]
    context = {
        "organ": request.organ,
        "attribute": request.attribute,
        "attribute_terms": sorted({t.lower() for t in terms}),
        "confidence": request.confidence,
        "definitive": bundle.tone["definitive"],
        "cautious": bundle.tone["cautious"],
        "limits": bundle.tone["limits"],
        "question": request.question,
        "label": request.label,
        "look_for": guidance["look_for"],
        "evidence": bundle.evidence(request.organ, request.attribute, request.label),
        "location": box_location(request.bbox_2d, request.model_size),
        "exemplars": bundle.exemplars_for(request.tone, seed),
    }
    return [
        {"role": "system", "content": bundle.system_prompt(context)},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_urls[0]}},
                {"type": "image_url", "image_url": {"url": image_urls[1]}},
                {"type": "text", "text": bundle.user.render(**context)},
            ],
        },
    ]


def render_repair(bundle: PromptBundle, previous_reply: str, problems: list[str]) -> list[dict[str, Any]]:
    """The two messages appended to a request whose reply failed validation: that reply and what was wrong."""
    return [
        {"role": "assistant", "content": previous_reply},
        {"role": "user", "content": bundle.repair.render(problems=[p.replace("_", " ") for p in problems])},
    ]
