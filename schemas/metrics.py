"""The paper's evaluation metrics (Look Closer, Then Diagnose §3.1–3.2), pure functions over rollout answers.

Per sample: the consensus label `y`, the readers' confidence `c` ∈ {0, 1}, the greedy answer and box, and N
sampled answers (N = 8 at T = 0.7).

- Acc: share of c = 1 samples whose greedy answer is y.
- mIoU: mean IoU of the greedy zoom box with the consensus box (model frame); no box counts as IoU 0.
- Consensus prediction (eq. 1): ŷ = the mode of the N sampled answers, ĉ = its share.
- SAcc: accuracy of ŷ on the samples the model is sure of, ĉ ≥ δ.
- Align: share of samples where the model's certainty 1[ĉ ≥ δ] equals the readers' c.
- ECE: expected calibration error of ĉ as the confidence in ŷ, over M equal-width bins (torchmetrics' binning).
- Entropy Gap: mean predictive entropy of the N answers on c = 0 samples minus that on c = 1 samples.

Conventions (documented, tested):
- Answers compare case-insensitively after trimming.
- An unparsable rollout (no answer) is its own answer class, `UNPARSABLE`: all unparsable rollouts of a
  sample are one class, which can be the mode and is never equal to a label. So a sample whose rollouts
  are all garbage has ĉ = 1 and a wrong ŷ: it is confidently wrong, not left out.
- Ties for the mode go to the answer that appears first among the rollouts (deterministic).
- A metric over an empty set (no c = 1 sample, no ĉ ≥ δ) is NaN, shown as "–".
- Entropy uses the natural logarithm.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from schemas.frames import iou

UNPARSABLE = "<unparsable>"
NAN = float("nan")


def normalize(answer: str | None) -> str:
    return UNPARSABLE if answer is None or not answer.strip() else answer.strip().casefold()


def consensus(answers: Sequence[str | None]) -> tuple[str, float]:
    """ŷ (the mode, ties to the first seen) and ĉ (its share) of one sample's sampled answers (eq. 1)."""
    if not answers:
        raise ValueError("a sample needs at least one rollout")
    classes = [normalize(a) for a in answers]
    counts = Counter(classes)
    best = max(counts.values())
    mode = next(a for a in classes if counts[a] == best)
    return mode, best / len(classes)


def entropy(answers: Sequence[str | None]) -> float:
    counts = np.array(list(Counter(normalize(a) for a in answers).values()), dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def is_correct(answer: str | None, label: str) -> bool:
    return normalize(answer) != UNPARSABLE and normalize(answer) == normalize(label)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else NAN


def accuracy(greedy: Sequence[str | None], labels: Sequence[str], confidences: Sequence[int]) -> float:
    """Acc on the consensus (c = 1) samples."""
    return _mean([is_correct(a, y) for a, y, c in zip(greedy, labels, confidences, strict=True) if c == 1])


def mean_iou(boxes: Sequence[Sequence[float] | None], gold: Sequence[Sequence[float]]) -> float:
    return _mean([iou(box, g) if box is not None else 0.0 for box, g in zip(boxes, gold, strict=True)])


def selective_accuracy(
    predictions: Sequence[str], shares: Sequence[float], labels: Sequence[str], delta: float
) -> float:
    """SAcc: accuracy of ŷ where ĉ ≥ δ."""
    return _mean([is_correct(p, y) for p, s, y in zip(predictions, shares, labels, strict=True) if s >= delta])


def alignment(shares: Sequence[float], confidences: Sequence[int], delta: float) -> float:
    """Align: share of samples where 1[ĉ ≥ δ] = c."""
    return _mean([float(int(s >= delta) == c) for s, c in zip(shares, confidences, strict=True)])


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE (L1) with `bins` equal-width bins, binned exactly as torchmetrics' binary CalibrationError: bin i holds
    [i/M, (i+1)/M), a confidence of exactly 1 has a bin of its own (ĉ = 1 is common: all rollouts agreeing).
    Each bin weighs its share of the samples; empty bins weigh nothing."""
    conf = np.asarray(confidences, dtype=float)
    hits = np.asarray(correct, dtype=float)
    if conf.size == 0:
        return NAN
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges, conf, side="right") - 1  # torch.bucketize(right=True) - 1
    error = 0.0
    for b in np.unique(index):
        members = index == b
        error += members.mean() * abs(hits[members].mean() - conf[members].mean())
    return float(error)


def entropy_gap(entropies: Sequence[float], confidences: Sequence[int]) -> float:
    """Mean predictive entropy on c = 0 minus on c = 1 (positive: the model is less sure where readers disagree)."""
    uncertain = [h for h, c in zip(entropies, confidences, strict=True) if c == 0]
    certain = [h for h, c in zip(entropies, confidences, strict=True) if c == 1]
    return _mean(uncertain) - _mean(certain) if uncertain and certain else NAN


@dataclass(frozen=True)
class SampleResult:
    """One evaluated sample: what the metrics need."""

    sample_id: str
    organ: str
    label: str
    confidence: int
    gold_box: list[float]
    greedy_answer: str | None
    greedy_box: list[float] | None
    sampled_answers: list[str | None]


@dataclass(frozen=True)
class Metrics:
    n: int
    n_consensus: int
    acc: float
    miou: float
    sacc: float
    align: float
    ece: float
    entropy_gap: float
    mean_share: float


def compute_metrics(results: Sequence[SampleResult], *, delta: float = 0.75, bins: int = 10) -> Metrics:
    """All metrics of a set of samples (one organ, or all)."""
    labels = [r.label for r in results]
    confidences = [r.confidence for r in results]
    modes = [consensus(r.sampled_answers) if r.sampled_answers else (UNPARSABLE, NAN) for r in results]
    predictions, shares = [m for m, _ in modes], [s for _, s in modes]
    sampled = [r for r, (_, s) in zip(results, modes, strict=True) if not math.isnan(s)]
    return Metrics(
        n=len(results),
        n_consensus=sum(c == 1 for c in confidences),
        acc=accuracy([r.greedy_answer for r in results], labels, confidences),
        miou=mean_iou([r.greedy_box for r in results], [r.gold_box for r in results]),
        sacc=selective_accuracy(predictions, shares, labels, delta) if sampled else NAN,
        align=alignment(shares, confidences, delta) if sampled else NAN,
        ece=expected_calibration_error(
            [s for s in shares if not math.isnan(s)],
            [is_correct(p, y) for p, s, y in zip(predictions, shares, labels, strict=True) if not math.isnan(s)],
            bins,
        ),
        entropy_gap=entropy_gap([entropy(r.sampled_answers) for r in sampled], [r.confidence for r in sampled]),
        mean_share=_mean([s for s in shares if not math.isnan(s)]),
    )
