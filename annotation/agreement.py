"""Reader agreement statistics for the consensus report and the dataset card.

Readings form an items × readers matrix with `None` where a reader did not read an item
(cleanlab multiannotator's shape). From it: Cohen's κ for two readers, Fleiss' κ for more, raw
agreement, the confusion matrix between two readers, each reader's agreement with the consensus
label, and the quantiles of the readers' box IoU. Undefined figures (no items) are NaN and shown
as "–" in markdown.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from matplotlib.ticker import MaxNLocator

IOU_QUANTILES: tuple[int, ...] = (10, 50, 90)  # percentiles reported for the readers' box IoU
LABEL_WRAP = 16  # characters per line of an axis label ("Complex cystic and solid" → two lines); words never split


def label_matrix(readings: dict[str, dict[str, str]], readers: list[str]) -> np.ndarray:
    """items × readers object array (None = not read), items in sorted id order, from item → reader → label."""
    items = sorted(readings)
    matrix = np.full((len(items), len(readers)), None, dtype=object)
    for i, item in enumerate(items):
        for j, reader in enumerate(readers):
            matrix[i, j] = readings[item].get(reader)
    return matrix


def _label_index(labels: Sequence[str]) -> dict[str, int]:
    return {label: k for k, label in enumerate(labels)}


def _check_known(values: Sequence[str | None], index: dict[str, int]) -> None:
    unknown = sorted({v for v in values if v is not None and v not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among {list(index)}")


def confusion_between_readers(a: Sequence[str | None], b: Sequence[str | None], labels: Sequence[str]) -> np.ndarray:
    """Counts of (reader a's label, reader b's label) over items both read; rows follow reader a."""
    if len(a) != len(b):
        raise ValueError(f"readers have {len(a)} and {len(b)} items")
    index = _label_index(labels)
    _check_known([*a, *b], index)
    table = np.zeros((len(labels), len(labels)), dtype=int)
    for x, y in zip(a, b, strict=True):
        if x is not None and y is not None:
            table[index[x], index[y]] += 1
    return table


def cohen_kappa(a: Sequence[str | None], b: Sequence[str | None], labels: Sequence[str] | None = None) -> float:
    """Cohen's κ of two readers over the items both labelled (pairs with a missing label are dropped).

    κ = (p_o − p_e) / (1 − p_e), p_e = Σ_k p_a(k) p_b(k)  (Cohen 1960, Educ. Psychol. Meas. 20:37, eq. 1).
    When p_e = 1 (both readers used one and the same label) κ is 0/0; we return 1.0 if p_o = 1 and
    0.0 otherwise, so a report never shows NaN for a unanimous attribute (scikit-learn returns NaN).
    No pair left: NaN. `labels` defaults to the labels seen; a label outside `labels` is a ValueError.
    """
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return float("nan")
    labels = list(labels) if labels is not None else sorted({v for pair in pairs for v in pair})
    table = confusion_between_readers([x for x, _ in pairs], [y for _, y in pairs], labels).astype(float)
    total = table.sum()
    observed = float(np.trace(table) / total)
    expected = float((table.sum(axis=1) * table.sum(axis=0)).sum() / total**2)
    if np.isclose(expected, 1.0):
        return 1.0 if np.isclose(observed, 1.0) else 0.0
    return (observed - expected) / (1.0 - expected)


def category_counts(matrix: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """items × labels: how many readers gave each label to each item (statsmodels' aggregate_raters)."""
    index = _label_index(labels)
    _check_known(list(matrix.ravel()), index)
    counts = np.zeros((matrix.shape[0], len(labels)), dtype=int)
    for (i, _), value in np.ndenumerate(matrix):
        if value is not None:
            counts[i, index[value]] += 1
    return counts


def fleiss_kappa(matrix: np.ndarray, labels: Sequence[str]) -> float:
    """Fleiss' κ of an items × readers matrix (any readers per item, but the same number of them).

    P_i = Σ_j n_ij (n_ij − 1) / (n (n − 1)), p_j = Σ_i n_ij / (N n), κ = (P̄ − P̄_e) / (1 − P̄_e),
    P̄_e = Σ_j p_j²  (Fleiss 1971, Psychol. Bull. 76:378, eqs. 1–9). Items with fewer than 2 readings
    are dropped first; the rest must all have the same number n of readings (Fleiss' assumption),
    otherwise ValueError — `fleiss_subset` picks such items. P̄_e = 1 (one label only): 1.0 if
    P̄ = 1 else 0.0, as in `cohen_kappa`. No item left: NaN.
    """
    counts = category_counts(matrix, labels)
    counts = counts[counts.sum(axis=1) >= 2]
    if not len(counts):
        return float("nan")
    raters = set(counts.sum(axis=1).tolist())
    if len(raters) > 1:
        raise ValueError(f"Fleiss' κ needs the same number of readings per item; found {sorted(raters)}")
    n = raters.pop()
    p_item = (counts * (counts - 1)).sum(axis=1) / (n * (n - 1))
    p_label = counts.sum(axis=0) / counts.sum()
    p_bar, p_expected = float(p_item.mean()), float((p_label**2).sum())
    if np.isclose(p_expected, 1.0):
        return 1.0 if np.isclose(p_bar, 1.0) else 0.0
    return (p_bar - p_expected) / (1.0 - p_expected)


def fleiss_subset(matrix: np.ndarray) -> np.ndarray:
    """Rows with the most common number (≥ 2) of readings, the largest set Fleiss' κ accepts (ties: more readings)."""
    present = (matrix != None).sum(axis=1)  # noqa: E711 (element-wise on an object array)
    frequency = Counter(int(k) for k in present if k >= 2)
    if not frequency:
        return matrix[:0]
    n = max(frequency, key=lambda k: (frequency[k], k))
    return matrix[present == n]


def raw_agreement(matrix: np.ndarray) -> float:
    """Share of items with ≥ 2 readings on which every present reader gives the same label (NaN if none)."""
    rows = [{v for v in row if v is not None} for row in matrix if sum(v is not None for v in row) >= 2]
    return float(np.mean([len(row) == 1 for row in rows])) if rows else float("nan")


def agreement_with_consensus(
    matrix: np.ndarray, consensus: Sequence[str | None], readers: list[str]
) -> dict[str, float]:
    """Per reader: share of their readings equal to the consensus label, where both exist (NaN if none)."""
    if len(consensus) != matrix.shape[0] or len(readers) != matrix.shape[1]:
        raise ValueError(f"matrix {matrix.shape} does not match {len(consensus)} items × {len(readers)} readers")
    result = {}
    for j, reader in enumerate(readers):
        hits = [matrix[i, j] == c for i, c in enumerate(consensus) if matrix[i, j] is not None and c is not None]
        result[reader] = float(np.mean(hits)) if hits else float("nan")
    return result


def most_shared_pair(matrix: np.ndarray, readers: list[str]) -> tuple[int, int]:
    """Column indices of the two readers who read the most items together (ties: earliest in `readers`)."""
    if len(readers) < 2:
        raise ValueError("a confusion matrix needs two readers")
    present = matrix != None  # noqa: E711 (element-wise on an object array)
    return max(combinations(range(len(readers)), 2), key=lambda p: int((present[:, p[0]] & present[:, p[1]]).sum()))


class BoxIouSummary(BaseModel):
    """Mean and quantiles of the readers' box IoU over the images of one organ × attribute."""

    n: int
    mean: float
    p10: float
    p50: float
    p90: float


def box_iou_summary(ious: Sequence[float]) -> BoxIouSummary | None:
    """Mean, p10, p50, p90 (linear interpolation) of the IoUs; None when there is none."""
    values = np.asarray(ious, dtype=float)
    if not len(values):
        return None
    quantiles = {f"p{q}": float(np.percentile(values, q)) for q in IOU_QUANTILES}
    return BoxIouSummary(n=len(values), mean=float(values.mean()), **quantiles)


class AttributeStatistics(BaseModel):
    """Every agreement figure of one organ × attribute (NaN where undefined)."""

    organ: str
    attribute: str
    n_items: int = Field(description="items with at least one reading")
    kind: Literal["cohen", "fleiss"]
    kappa: float
    n_kappa_items: int = Field(description="items κ is computed over (both read / the Fleiss subset)")
    raw_agreement: float
    share_c0: float = Field(description="share of consensus records with c = 0")
    labels: list[str]
    readers: list[str]
    confusion_readers: tuple[str, str] = Field(description="rows, columns of `confusion`")
    confusion: list[list[int]]
    per_reader_agreement: dict[str, float]
    box_iou: BoxIouSummary | None = None


def attribute_statistics(
    organ: str,
    attribute: str,
    readings: dict[str, dict[str, str]],
    readers: list[str],
    consensus_labels: dict[str, str],
    confidences: Sequence[int],
    box_ious: Sequence[float],
    *,
    labels: Sequence[str] | None = None,
) -> AttributeStatistics:
    """All figures of one organ × attribute from item → reader → label, the consensus, c and box IoUs.

    Two readers: Cohen's κ. More: Fleiss' κ over `fleiss_subset` (items with the most common number
    of readings). The confusion matrix is between the two readers who share the most items.
    `labels` (the vocabulary's canonical values) defaults to the labels seen, sorted.
    """
    if len(readers) < 2:
        raise ValueError(f"agreement needs at least two readers, got {readers}")
    matrix = label_matrix(readings, readers)
    seen = {v for v in matrix.ravel() if v is not None} | {v for v in consensus_labels.values() if v is not None}
    labels = list(labels) if labels is not None else sorted(seen)
    present = (matrix != None).sum(axis=1)  # noqa: E711 (element-wise on an object array)
    if len(readers) == 2:
        kind: Literal["cohen", "fleiss"] = "cohen"
        kappa = cohen_kappa(matrix[:, 0], matrix[:, 1], labels)
        n_kappa_items = int((present == 2).sum())
    else:
        kind, subset = "fleiss", fleiss_subset(matrix)
        kappa, n_kappa_items = fleiss_kappa(subset, labels), len(subset)
    first, second = most_shared_pair(matrix, readers)
    items = sorted(readings)
    return AttributeStatistics(
        organ=organ,
        attribute=attribute,
        n_items=int((present >= 1).sum()),
        kind=kind,
        kappa=kappa,
        n_kappa_items=n_kappa_items,
        raw_agreement=raw_agreement(matrix),
        share_c0=float(np.mean([c == 0 for c in confidences])) if len(confidences) else float("nan"),
        labels=labels,
        readers=list(readers),
        confusion_readers=(readers[first], readers[second]),
        confusion=confusion_between_readers(matrix[:, first], matrix[:, second], labels).tolist(),
        per_reader_agreement=agreement_with_consensus(matrix, [consensus_labels.get(i) for i in items], readers),
        box_iou=box_iou_summary(box_ious),
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.2f}"


def statistics_markdown(stats: Sequence[AttributeStatistics]) -> str:
    """Per organ: attribute | n | κ | raw agreement | share c=0 | mean box IoU, then each reader's agreement."""
    lines = ["# Reader agreement", ""]
    for organ in sorted({s.organ for s in stats}):
        rows = [s for s in stats if s.organ == organ]
        lines += [
            f"## {organ}",
            "",
            "| attribute | n | κ | raw agreement | share c=0 | mean box IoU |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for s in rows:
            iou = _fmt(s.box_iou.mean) if s.box_iou else "–"
            lines.append(
                f"| {s.attribute} | {s.n_items} | {_fmt(s.kappa)} ({s.kind}) | {_fmt(s.raw_agreement)} | "
                f"{_fmt(s.share_c0)} | {iou} |"
            )
        readers = sorted({r for s in rows for r in s.readers})
        lines += [
            "",
            f"Agreement of each reader with the consensus label ({organ}):",
            "",
            "| attribute | " + " | ".join(readers) + " |",
            "|---|" + "---:|" * len(readers),
        ]
        for s in rows:
            cells = " | ".join(_fmt(s.per_reader_agreement.get(r)) for r in readers)
            lines.append(f"| {s.attribute} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def _pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend, imported lazily so that only reports pay for matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_locator() -> MaxNLocator:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _wrap(label: str) -> str:
    return textwrap.fill(label, LABEL_WRAP, break_long_words=False, break_on_hyphens=False)


def plot_confusion(stats: AttributeStatistics, path: Path) -> Path:
    """Heat map of one reader's labels (rows) against another's (columns), counts in the cells, κ in the title."""
    plt = _pyplot()
    table = np.asarray(stats.confusion, dtype=int).reshape(len(stats.labels), len(stats.labels))
    labels = [_wrap(label) for label in stats.labels]
    size = 3.0 + 0.75 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.2, size + 0.6))
    image = ax.imshow(table, cmap="Blues", vmin=0, vmax=max(int(table.max()), 1))
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    row_reader, column_reader = stats.confusion_readers
    ax.set_xlabel(f"{column_reader}'s label")
    ax.set_ylabel(f"{row_reader}'s label")
    for (i, j), count in np.ndenumerate(table):
        dark = count > table.max() / 2
        ax.text(j, i, str(count), ha="center", va="center", color="white" if dark else "black", fontsize=10)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="items")
    colorbar.ax.yaxis.set_major_locator(_integer_locator())
    ax.set_title(
        f"{stats.organ} · {stats.attribute}\n{stats.kind} κ = {_fmt(stats.kappa)}, "
        f"raw agreement {_fmt(stats.raw_agreement)}, n = {stats.n_items}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_iou_histogram(organ: str, ious: Sequence[float], path: Path, threshold: float = 0.5) -> Path:
    """Histogram of the readers' box IoU with the review threshold as a vertical line."""
    plt = _pyplot()
    values = np.asarray(ious, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    heights, _, _ = ax.hist(values, bins=20, range=(0.0, 1.0), color="#4C72B0", edgecolor="white")
    ax.set_ylim(0, max(float(heights.max()) if len(values) else 0.0, 1.0) * 1.3)  # head room for the legend
    ax.yaxis.set_major_locator(_integer_locator())
    below = float((values < threshold).mean()) if len(values) else 0.0
    ax.axvline(threshold, color="#C44E52", linestyle="--", label=f"threshold {threshold:.2f} ({below:.0%} below)")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("box IoU between readers")
    ax.set_ylabel("images")
    ax.set_title(f"{organ}: reader box agreement (n = {len(values)})")
    ax.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_label_distribution(organ: str, counts: dict[tuple[str, str], tuple[int, int]], path: Path) -> Path:
    """Horizontal bars per attribute · label, split into c = 1 (readers agreed) and c = 0 (they disagreed)."""
    plt = _pyplot()
    keys = sorted(counts)
    agreed = np.array([counts[k][0] for k in keys])
    disagreed = np.array([counts[k][1] for k in keys])
    fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.28 * len(keys)))
    positions = np.arange(len(keys))[::-1]
    ax.barh(positions, agreed, color="#4C72B0", label="c = 1 (agreed)")
    ax.barh(positions, disagreed, left=agreed, color="#DD8452", label="c = 0 (disagreed)")
    ax.set_yticks(positions, [f"{attribute} · {label}" for attribute, label in keys], fontsize=8)
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlabel("rows")
    ax.set_title(f"{organ}: labels and confidence (n = {int(agreed.sum() + disagreed.sum())})", fontsize=10)
    ax.set_xlim(0, max(int((agreed + disagreed).max()) if keys else 0, 1) * 1.05)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)  # never over a bar
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
