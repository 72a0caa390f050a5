"""Consensus: from readings to one `ConsensusRecord` per image × attribute (paper §3: c from agreement).

Two readers agree → their value and c = 1; they disagree → c = 0 and the label from the policy
(the adjudicator's answer, the primary reader's, or none). With more readers, `agreement` is the
share agreeing with the mode and c = 1 iff it reaches the threshold (default: unanimous). Sources
that grade their own certainty (BUS-CoT boundary clarity) give a metadata-derived c. Boxes are
matched across readers (Hungarian on IoU) and fused when they overlap enough; otherwise the image
needs review and the adjudicated box wins when there is one. Every outcome names the rule that
produced it, or the reason the image × attribute cannot go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy.optimize import linear_sum_assignment

from schemas.frames import iou
from schemas.records import ConfidenceSource, ConsensusRecord, ReaderAnnotation, SourceAnnotation
from schemas.vocabulary import load_vocabulary

Box = list[float]


# Two readers' boxes that overlap less than this disagree: the pull routes the image to adjudication and
# consensus flags the record. The one owner of the number, its bounds and its meaning: the policy's field is
# this type with this default, the pull stage's parameter takes them from here, the card states the saved policy.
MIN_BOX_IOU = 0.5
BoxIouThreshold = Annotated[
    float,
    Field(ge=0.0, le=1.0, description="reader boxes overlapping less than this disagree: adjudication and review"),
]


class ConsensusPolicy(BaseModel):
    """The configurable rules (every threshold named here, none in the code below)."""

    disagreement: Literal["auto", "adjudicated", "primary_reader", "exclude"] = Field(
        default="auto", description="label on disagreement; auto = adjudicated when there is an answer, else primary"
    )
    primary_reader: str | None = Field(default=None, description="pseudonym; default: the first in sorted order")
    agreement_threshold: float = Field(default=1.0, gt=0.0, le=1.0, description="c = 1 iff agreement >= this")
    min_box_iou: BoxIouThreshold = MIN_BOX_IOU
    box_fusion: Literal["mean", "union", "intersection"] = "mean"
    metadata_precedence: Literal["readers", "metadata"] = Field(
        default="readers", description="which c wins when an image has both readers and metadata confidence"
    )


@dataclass
class ConsensusOutcome:
    """One image × attribute: a record and the rule that made it, or the reason it is quarantined."""

    image_id: str
    attribute: str
    record: ConsensusRecord | None = None
    rule: str | None = None
    reason: str | None = None


@dataclass
class _Lesion:
    """One lesion as several readers saw it, after matching."""

    by_reader: dict[str, ReaderAnnotation] = field(default_factory=dict)

    def boxes(self) -> list[Box]:
        return [r.box for r in self.by_reader.values() if r.box is not None]


def fuse_boxes(boxes: Sequence[Box], how: str) -> Box:
    """Coordinate-wise mean, union or intersection of boxes (intersection falls back to mean if empty)."""
    array = np.asarray(boxes, dtype=float)
    if how == "union":
        return [*array[:, :2].min(axis=0).tolist(), *array[:, 2:].max(axis=0).tolist()]
    if how == "intersection":
        box = [*array[:, :2].max(axis=0).tolist(), *array[:, 2:].min(axis=0).tolist()]
        if box[2] > box[0] and box[3] > box[1]:
            return box
    return array.mean(axis=0).tolist()


def min_pairwise_iou(boxes: Sequence[Box]) -> float:
    return min((iou(a, b) for a, b in combinations(boxes, 2)), default=0.0)


def match_lesions(by_reader: dict[str, list[ReaderAnnotation]]) -> list[_Lesion]:
    """Group the readers' lesions: each reader matched to the reader with most lesions (Hungarian on IoU)."""
    readers = sorted(by_reader, key=lambda name: (-len(by_reader[name]), name))
    reference = readers[0]
    lesions = [_Lesion({reference: reading}) for reading in by_reader[reference]]
    for reader in readers[1:]:
        theirs = by_reader[reader]
        cost = np.zeros((len(lesions), len(theirs)))
        for i, lesion in enumerate(lesions):
            for j, reading in enumerate(theirs):
                ref_box = lesion.by_reader[reference].box
                cost[i, j] = -iou(ref_box, reading.box) if ref_box and reading.box else 0.0
        rows, cols = linear_sum_assignment(cost)
        matched = set()
        for i, j in zip(rows, cols, strict=True):
            if cost[i, j] < 0 or (lesions[i].by_reader[reference].box is None or theirs[j].box is None):
                lesions[i].by_reader[reader] = theirs[j]
                matched.add(j)
        lesions += [_Lesion({reader: theirs[j]}) for j in range(len(theirs)) if j not in matched]
    return lesions


def _main_lesion(lesions: list[_Lesion]) -> _Lesion:
    """The record is per image × attribute: the lesion most readers saw, then the largest."""

    def area(lesion: _Lesion) -> float:
        boxes = lesion.boxes()
        return float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes])) if boxes else 0.0

    return max(lesions, key=lambda lesion: (len(lesion.by_reader), area(lesion)))


def _mode(values: list[str], order: list[str]) -> tuple[str, float]:
    """Most frequent value (ties broken by vocabulary order) and the share agreeing with it."""
    counts = Counter(values)
    best = max(counts.values())
    mode = min((v for v, n in counts.items() if n == best), key=lambda v: order.index(v) if v in order else len(order))
    return mode, best / len(values)


def derive_consensus(
    image_id: str,
    organ: str,
    size: tuple[int, int],
    readings: Sequence[ReaderAnnotation],
    sources: Sequence[SourceAnnotation],
    policy: ConsensusPolicy,
) -> list[ConsensusOutcome]:
    """Every attribute of the organ for one image, by the rules of the module docstring."""
    vocabulary = load_vocabulary(organ)
    by_reader: dict[str, list[ReaderAnnotation]] = {}
    for reading in readings:
        if not reading.adjudication:
            by_reader.setdefault(reading.reader, []).append(reading)
    adjudicated = sorted((r for r in readings if r.adjudication), key=lambda r: r.lesion_index)
    metadata = next((s for s in sources if s.confidence), None)
    duplicated = any(
        len({r.lesion_index for r in lesions}) < len(lesions) for lesions in by_reader.values()
    )  # the same reader twice for one lesion: which reading counts is not ours to guess
    outcomes = []
    lesion = _main_lesion(match_lesions(by_reader)) if by_reader else None
    box_state = _box(lesion, adjudicated, metadata, size, policy) if lesion or metadata else None
    disputed = bool(by_reader) and readers_disagree(by_reader, min_box_iou=policy.min_box_iou)
    for attribute, spec in vocabulary.attributes.items():
        outcome = ConsensusOutcome(image_id, attribute)
        outcomes.append(outcome)
        if duplicated:
            outcome.reason = "duplicate_reading"
            continue
        if box_state is None:
            outcome.reason = "no_readings"
            continue
        if isinstance(box_state, str):
            outcome.reason = box_state
            continue
        box, box_iou, needs_review = box_state
        values = {r: a.attributes.get(attribute) for r, a in lesion.by_reader.items()} if lesion else {}
        if any(v is not None and v not in spec.values for v in values.values()):
            outcome.reason = "label_not_in_vocabulary"
            continue
        present = {r: v for r, v in values.items() if v is not None}
        meta_label = metadata.attributes.get(attribute) if metadata else None
        meta_c = metadata.confidence.get(attribute) if metadata else None
        base = dict(
            image_id=image_id,
            organ=organ,
            attribute=attribute,
            box=box,
            box_iou=box_iou,
            needs_review=needs_review,
            image_width=size[0],
            image_height=size[1],
            reader_labels=present,
        )
        if meta_c is not None and (len(present) < 2 or policy.metadata_precedence == "metadata"):
            label = meta_label or (_mode(list(present.values()), spec.canonical_values)[0] if present else None)
            if label is None:
                outcome.reason = "metadata_confidence_without_label"
                continue
            outcome.record = ConsensusRecord(
                **base, label=label, confidence=meta_c, agreement=1.0, confidence_source=ConfidenceSource.metadata
            )
            outcome.rule = "metadata"
            continue
        if len(present) < 2:
            outcome.reason = (
                "no_readings" if not values else "reader_missing_attribute" if len(values) >= 2 else "single_reading"
            )
            continue
        if adjudicated and not disputed:
            outcome.reason = "adjudication_without_dispute"
            continue
        mode, agreement = _mode(list(present.values()), spec.canonical_values)
        c = int(agreement >= policy.agreement_threshold)
        if c == 1:
            outcome.record = ConsensusRecord(
                **base, label=mode, confidence=1, agreement=agreement, confidence_source=ConfidenceSource.dual_reader
            )
            outcome.rule = "agreement"
            continue
        answer = adjudicated[0].attributes.get(attribute) if adjudicated else None
        rule = policy.disagreement
        if rule == "auto":
            rule = "adjudicated" if answer is not None else "primary_reader"
        if rule == "exclude":
            outcome.reason = "excluded_disagreement"
        elif rule == "adjudicated" and answer is None:
            outcome.reason = "awaiting_adjudication"
        elif rule == "adjudicated":
            outcome.record = ConsensusRecord(
                **base, label=answer, confidence=0, agreement=agreement, confidence_source=ConfidenceSource.adjudicated
            )
            outcome.rule = "adjudicated"
        else:
            primary = policy.primary_reader if policy.primary_reader in present else sorted(present)[0]
            outcome.record = ConsensusRecord(
                **base,
                label=present[primary],
                confidence=0,
                agreement=agreement,
                confidence_source=ConfidenceSource.dual_reader,
            )
            outcome.rule = f"primary_reader:{primary}"
    return outcomes


def _box(
    lesion: _Lesion | None,
    adjudicated: list[ReaderAnnotation],
    metadata: SourceAnnotation | None,
    size: tuple[int, int],
    policy: ConsensusPolicy,
) -> tuple[Box, float | None, bool] | str:
    """(box, reader IoU, needs_review), or the reason no box can be given."""
    if lesion is None:  # metadata only: the source box, or the whole image for lesion crops
        assert metadata is not None
        return (metadata.box or [0.0, 0.0, float(size[0]), float(size[1])]), None, False
    if any(r.box is None for r in lesion.by_reader.values()):
        return "reader_without_box"
    boxes = lesion.boxes()
    adjudicated_box = next((r.box for r in adjudicated if r.box is not None), None)
    if len(boxes) < 2:
        return (adjudicated_box or boxes[0]), None, adjudicated_box is None
    overlap = min_pairwise_iou(boxes)
    if overlap >= policy.min_box_iou:
        return fuse_boxes(boxes, policy.box_fusion), overlap, False
    if adjudicated_box is not None:
        return adjudicated_box, overlap, False
    return fuse_boxes(boxes, "mean"), overlap, True


def readers_disagree(by_reader: dict[str, list[ReaderAnnotation]], *, min_box_iou: float) -> bool:
    """The image-level dispute that sends an image to adjudication (and that consensus checks against).

    After matching lesions across readers: a lesion not every reader saw, boxes overlapping below
    the threshold, or any attribute on which the readers differ.
    """
    for lesion in match_lesions(by_reader):
        if len(lesion.by_reader) < len(by_reader):
            return True
        boxes = lesion.boxes()
        if len(boxes) > 1 and min_pairwise_iou(boxes) < min_box_iou:
            return True
        names = {name for reading in lesion.by_reader.values() for name in reading.attributes}
        if any(len({r.attributes.get(name) for r in lesion.by_reader.values()}) > 1 for name in names):
            return True
    return False
