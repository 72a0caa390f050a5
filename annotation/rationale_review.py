"""Expert sampling of teacher rationales (EchoVLM's safeguard): which ones a sonographer reviews, and how.

A share of the produced rationales, stratified by organ and tone (c), goes to one Label Studio
project where a sonographer sees the image, the question, the consensus answer and whether the
readers agreed, then the teacher's search and diagnosis, and accepts or rejects with a reason from a
fixed list (no free text: nothing typed there can leak into the dataset). Rejected rationales are
quarantined as `expert_rejected`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

from annotation.projects import local_files_url
from schemas.records import Rationale

REVIEW_PROJECT_TITLE = "lookcloser rationale review"
EXPERT_REJECTED = "expert_rejected"
VERDICTS = ("accept", "reject")
REJECT_REASONS = (
    "evidence_not_in_image",
    "wrong_tone_for_agreement",
    "search_reveals_answer",
    "clinically_wrong",
    "unclear_language",
)


def review_label_config() -> str:
    """The review project's labelling interface: the image and the texts, a verdict and a reason."""
    reasons = "\n".join(f'        <Choice value="{r}"/>' for r in REJECT_REASONS)
    return f"""<View style="display: flex; gap: 1.5em;">
  <View style="flex: 55%;">
    <Image name="image" value="$image" zoom="true"/>
    <RectangleLabels name="zoom" toName="image" showInline="true">
      <Label value="zoom box" background="#f59e0b"/>
    </RectangleLabels>
  </View>
  <View style="flex: 45%;">
    <Header value="Does the rationale match the image, in the tone the readers' agreement calls for?" size="5"/>
    <Text name="question" value="$question"/>
    <Text name="answer" value="$answer"/>
    <Text name="agreement" value="$agreement"/>
    <Header value="Search (before zooming in to the box)" size="6"/>
    <Text name="search" value="$search"/>
    <Header value="Diagnosis (after zooming in)" size="6"/>
    <Text name="diagnosis" value="$diagnosis"/>
    <Choices name="verdict" toName="diagnosis" choice="single-radio" required="true" showInline="true">
      <Choice value="accept"/>
      <Choice value="reject"/>
    </Choices>
    <View visibleWhen="choice-selected" whenTagName="verdict" whenChoiceValue="reject">
      <Choices name="reason" toName="diagnosis" choice="single-radio">
{reasons}
      </Choices>
    </View>
  </View>
</View>"""


def _rank(rationale: Rationale) -> str:
    """A stable pseudo-random order: the same rationale is always sampled (or not) at the same share."""
    return hashlib.sha256(f"review|{rationale.record_id}|{rationale.cache_key}".encode()).hexdigest()


def sample_for_review(rationales: Iterable[Rationale], share: float) -> list[Rationale]:
    """ceil(share · n) produced rationales of each (organ, c) stratum; none when share is 0.

    Produced means it passed the automatic checks: one rejected by an expert since stays in the population,
    so a later round does not draw a replacement for it.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"review share must be in [0, 1], got {share}")
    strata: dict[tuple[str, int], list[Rationale]] = {}
    for rationale in rationales:
        if rationale.valid or rationale.validation_errors[:1] == [EXPERT_REJECTED]:
            strata.setdefault((rationale.organ, rationale.confidence), []).append(rationale)
    sampled = []
    for members in strata.values():
        members.sort(key=_rank)
        sampled += members[: math.ceil(share * len(members))]
    return sorted(sampled, key=lambda r: r.record_id)


def review_task(rationale: Rationale, storage_key: str, model_frame: tuple[int, int]) -> dict[str, Any]:
    """One review task: ids to map the verdict back, the image with the zoom box, the texts to judge."""
    agreement = (
        "the two readers agreed: the diagnosis should sound definitive"
        if rationale.confidence
        else "the readers disagreed: the diagnosis should sound cautious"
    )
    x1, y1, x2, y2 = rationale.bbox_2d
    width, height = model_frame
    zoom_box = {
        "from_name": "zoom",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {
            "x": 100 * x1 / width,
            "y": 100 * y1 / height,
            "width": 100 * (x2 - x1) / width,
            "height": 100 * (y2 - y1) / height,
            "rotation": 0,
            "rectanglelabels": ["zoom box"],
        },
    }
    return {
        "data": {
            "rationale_key": rationale.record_id,
            "cache_key": rationale.cache_key,
            "organ": rationale.organ,
            "image": local_files_url(storage_key),
            "question": rationale.question,
            "answer": f"{rationale.attribute.replace('_', ' ')}: {rationale.label}",
            "agreement": agreement,
            "search": rationale.search,
            "diagnosis": rationale.diagnosis,
        },
        "predictions": [{"model_version": "consensus-box", "score": 1.0, "result": [zoom_box]}],
    }


def verdict_from_result(result: list[dict[str, Any]]) -> tuple[str, str | None] | None:
    """(verdict, reason) of one review annotation; None when no verdict was given."""
    chosen = {
        item.get("from_name"): (item.get("value", {}).get("choices") or [None])[0]
        for item in result
        if item.get("type") == "choices"
    }
    verdict = chosen.get("verdict")
    if verdict not in VERDICTS:
        return None
    reason = chosen.get("reason") if verdict == "reject" else None
    if verdict == "reject" and reason not in REJECT_REASONS:
        reason = "no_reason_given"
    return verdict, reason


def review_result(verdict: str, reason: str | None = None) -> list[dict[str, Any]]:
    """An annotation result with this verdict (what a reviewer's clicks produce; used by the simulated one)."""
    result = [
        {"from_name": "verdict", "to_name": "diagnosis", "type": "choices", "value": {"choices": [verdict]}},
    ]
    if reason:
        result.append(
            {"from_name": "reason", "to_name": "diagnosis", "type": "choices", "value": {"choices": [reason]}}
        )
    return result
