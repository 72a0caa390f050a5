"""Checks of one teacher reply: each is a small function that returns a snake_case reason or None.

`check_reply` parses the reply and runs every check; an empty list means the rationale can be used.
The reasons name the failure precisely enough to go into a repair instruction and a quarantine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from flows.teacher.prompting import PromptBundle, TeacherRequest
from schemas.wording import contains_any, phrase_key, phrases_pattern, tone_problem


@dataclass(frozen=True)
class RationaleText:
    search: str
    diagnosis: str


@dataclass(frozen=True)
class CheckContext:
    request: TeacherRequest
    bundle: PromptBundle


Check = Callable[[RationaleText, CheckContext], str | None]

# A box or coordinates: a bracketed list of numbers, an x/y pair, or pixel talk.
COORDINATES_RE = re.compile(
    r"\[\s*\d+(?:\.\d+)?\s*(?:,\s*\d+(?:\.\d+)?\s*){1,}\]|\(\s*\d+\s*,\s*\d+\s*\)|\b\d+\s*(?:px|pixels?)\b|bbox|\bx1\b|\by1\b",
    re.I,
)
TAG_RE = re.compile(r"</?\s*[a-z_|][a-z0-9_|]*\s*/?>|<\|", re.I)
# Any other markup a viewer could render or execute: HTML elements with attributes, comments and
# declarations, character entities, Markdown links and images, code fences, script URLs. A rationale
# is plain prose; it is shown in Label Studio and a dataset viewer, so markup is refused, not escaped.
MARKUP_RE = re.compile(
    r"<\s*/?\s*[a-z!?][^<>]*>"  # <img src=x onerror=...>, <!-- -->, <!DOCTYPE>, <?xml ?>
    r"|&(?:#\d+|#x[0-9a-f]+|[a-z][a-z0-9]{1,31});"  # &lt; &#60; &#x3c;
    r"|!?\[[^\]\n]*\]\([^)\n]*\)"  # [text](url), ![alt](url)
    r"|```|\b(?:javascript|vbscript|data):",
    re.I,
)
PHI_PATTERNS = {
    "date": re.compile(r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}\b"),
    "long_number": re.compile(r"\b\d{6,}\b"),
    "email": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"),
    "phone": re.compile(r"\+?\d[\d ()-]{8,}\d"),
    "name_title": re.compile(r"\b(?:mr|mrs|ms|miss|dr)\.?\s+[A-Z][a-z]+", re.I),
    "identifier_word": re.compile(r"\b(?:patient name|date of birth|dob|mrn|medical record|accession)\b", re.I),
}
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


@cache
def _value_of_phrase(terms: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, str]:
    return {phrase_key(p): value for value, phrases in terms for p in phrases}


def mentioned_values(text: str, terms: dict[str, list[str]]) -> set[str]:
    """The values named in the text; at each place the longest phrase wins.

    "very hypoechoic" names Very hypoechoic, not also Hypoechoic, and "not parallel" names Not parallel.
    """
    frozen = tuple((value, tuple(phrases)) for value, phrases in terms.items())
    value_of = _value_of_phrase(frozen)
    pattern = phrases_pattern(tuple(p for _, phrases in frozen for p in phrases))
    return {value_of[phrase_key(m.group(0))] for m in pattern.finditer(text)}


# ------------------------------------------------------------------------------------------ checks
def search_reveals_answer(rationale: RationaleText, ctx: CheckContext) -> str | None:
    terms = [
        t for phrases in ctx.bundle.value_terms(ctx.request.organ, ctx.request.attribute).values() for t in phrases
    ]
    return "search_reveals_answer" if contains_any(rationale.search, terms) else None


def diagnosis_omits_label(rationale: RationaleText, ctx: CheckContext) -> str | None:
    terms = ctx.bundle.value_terms(ctx.request.organ, ctx.request.attribute)
    return None if ctx.request.label in mentioned_values(rationale.diagnosis, terms) else "diagnosis_omits_label"


def diagnosis_contradicts_label(rationale: RationaleText, ctx: CheckContext) -> str | None:
    """Another value of the attribute is named (negations included: the teacher should not name rivals)."""
    terms = ctx.bundle.value_terms(ctx.request.organ, ctx.request.attribute)
    others = mentioned_values(rationale.diagnosis, terms) - {ctx.request.label}
    return "diagnosis_contradicts_label" if others else None


def tone_mismatch(rationale: RationaleText, ctx: CheckContext) -> str | None:
    """c = 1: definitive wording and no cautious word; c = 0: cautious wording and no definitive word."""
    return tone_problem(rationale.diagnosis, ctx.request.confidence, ctx.bundle.tone)


def _length(field: str) -> Check:
    def check(rationale: RationaleText, ctx: CheckContext) -> str | None:
        low, high = ctx.bundle.tone["limits"][field]
        words = len(getattr(rationale, field).split())
        if words < low:
            return f"{field}_too_short"
        return f"{field}_too_long" if words > high else None

    check.__name__ = f"{field}_length"
    return check


def contains_coordinates(rationale: RationaleText, _ctx: CheckContext) -> str | None:
    return "contains_coordinates" if COORDINATES_RE.search(rationale.search + "\n" + rationale.diagnosis) else None


def contains_tags(rationale: RationaleText, _ctx: CheckContext) -> str | None:
    return "contains_tags" if TAG_RE.search(rationale.search + "\n" + rationale.diagnosis) else None


def contains_markup(rationale: RationaleText, _ctx: CheckContext) -> str | None:
    return "contains_markup" if MARKUP_RE.search(rationale.search + "\n" + rationale.diagnosis) else None


def contains_phi_like(rationale: RationaleText, _ctx: CheckContext) -> str | None:
    text = rationale.search + "\n" + rationale.diagnosis
    return "contains_phi_like_text" if any(p.search(text) for p in PHI_PATTERNS.values()) else None


def contains_control_characters(rationale: RationaleText, _ctx: CheckContext) -> str | None:
    return "control_characters" if CONTROL_RE.search(rationale.search + rationale.diagnosis) else None


CHECKS: tuple[Check, ...] = (
    contains_control_characters,
    contains_tags,
    contains_markup,
    contains_coordinates,
    contains_phi_like,
    _length("search"),
    _length("diagnosis"),
    search_reveals_answer,
    diagnosis_omits_label,
    diagnosis_contradicts_label,
    tone_mismatch,
)


def parse_reply(content: str | None) -> tuple[RationaleText | None, str | None]:
    """The reply's `{"search", "diagnosis"}` object, or None and the reason it is unusable."""
    if not content or not content.strip():
        return None, "empty_reply"
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return None, "invalid_json"
    if not isinstance(data, dict):
        return None, "invalid_json"
    fields = {}
    for name in ("search", "diagnosis"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            return None, f"missing_{name}"
        fields[name] = " ".join(value.split())  # one line of prose: newlines would break the trajectory
    return RationaleText(**fields), None


def check_reply(content: str | None, ctx: CheckContext) -> tuple[RationaleText | None, list[str]]:
    """Parse and check one reply: the rationale and the reasons it fails (empty when it is usable)."""
    rationale, reason = parse_reply(content)
    if rationale is None:
        return None, [reason or "invalid_json"]
    return rationale, [r for check in CHECKS if (r := check(rationale, ctx)) is not None]
