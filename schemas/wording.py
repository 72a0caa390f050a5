"""Wording: whole-phrase matching in rationale prose, and the tone check of the paper's c (confident wording
where the readers agreed, cautious where they disagreed) against a prompt bundle's tone lexicons
(`prompts/<version>/tone.yaml`). The teacher's reply checks and the release gate both call `tone_problem`.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any


def _phrase_regex(phrase: str) -> str:
    return r"\s+".join(re.escape(w) for w in phrase.lower().split())


def phrase_key(text: str) -> str:
    return " ".join(text.lower().split())


@cache
def phrases_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """One case-insensitive alternation of whole phrases, longest first (so it wins where they overlap).

    Hyphens count as part of a word: "hypo-echoic" is not "echoic", "non-parallel" is not "parallel".
    """
    ordered = sorted({phrase_key(p) for p in phrases}, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(_phrase_regex(p) for p in ordered) + r")(?![\w-])", re.I)


def contains_any(text: str, phrases: list[str]) -> list[str]:
    """The phrases that occur in the text (whole words, any case)."""
    if not phrases:
        return []
    found = {phrase_key(m.group(0)) for m in phrases_pattern(tuple(phrases)).finditer(text)}
    return [p for p in phrases if phrase_key(p) in found]


def tone_problem(diagnosis: str, confidence: int, lexicon: dict[str, Any]) -> str | None:
    """None when the diagnosis carries the tone of c, else the reason: c = 1 wants definitive wording and no
    cautious word, c = 0 cautious wording and no definitive word."""
    definitive = contains_any(diagnosis, lexicon["definitive"])
    cautious = contains_any(diagnosis, lexicon["cautious"])
    if confidence == 1:
        if cautious:
            return "cautious_tone_on_agreement"
        return None if definitive else "missing_definitive_tone"
    if definitive:
        return "definitive_tone_on_disagreement"
    return None if cautious else "missing_cautious_tone"
