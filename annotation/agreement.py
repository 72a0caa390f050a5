"""Reader agreement statistics for the consensus report and the dataset card.

Readers form an items × readers matrix with `None` for a missing reading (cleanlab's
multiannotator shape). Cohen's κ for two readers, Fleiss' κ for more, raw agreement, the
confusion matrix between two readers, agreement of each reader with the consensus, box IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel


def label_matrix(readings: dict[str, dict[str, str]], readers: list[str]) -> np.ndarray:
    """items × readers object array (None = not read) from item id → reader → label."""
    items = sorted(readings)
    matrix = np.full((len(items), len(readers)), None, dtype=object)
    for i, item in enumerate(items):
        for j, reader in enumerate(readers):
            matrix[i, j] = readings[item].get(reader)
    return matrix


def cohen_kappa(a: Sequence[str | None], b: Sequence[str | None], labels: Sequence[str] | None = None) -> float:
    """Cohen's κ = (p_o − p_e) / (1 − p_e) over the pairs both readers labelled (Cohen 1960).

    When chance agreement is certain (p_e = 1: one label only) κ is undefined; we return 1.0 if the
    readers agree everywhere, else 0.0, so a report never shows NaN.
    """
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return float("nan")
    labels = list(labels) if labels is not None else sorted({v for pair in pairs for v in pair})
    table = confusion_between_readers([x for x, _ in pairs], [y for _, y in pairs], labels).astype(float)
    total = table.sum()
    observed = np.trace(table) / total
    expected = float((table.sum(axis=1) * table.sum(axis=0)).sum()) / total**2
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return float((observed - expected) / (1 - expected))


def fleiss_kappa(matrix: np.ndarray, labels: Sequence[str]) -> float:
    """Fleiss' κ (Fleiss 1971) over items with the modal number of ratings (other items are dropped)."""
    counts = np.array([[sum(v == label for v in row if v is not None) for label in labels] for row in matrix])
    raters = counts.sum(axis=1)
    if not len(raters) or raters.max() < 2:
        return float("nan")
    n = np.bincount(raters[raters >= 2]).argmax()  # Fleiss needs the same number of raters per item
    counts = counts[raters == n]
    p_item = ((counts * (counts - 1)).sum(axis=1)) / (n * (n - 1))
    p_label = counts.sum(axis=0) / counts.sum()
    p_bar, p_e = p_item.mean(), float((p_label**2).sum())
    if p_e >= 1.0:
        return 1.0 if p_bar == 1.0 else 0.0
    return float((p_bar - p_e) / (1 - p_e))


def raw_agreement(matrix: np.ndarray) -> float:
    """Share of items (with ≥ 2 readings) on which every present reader gives the same label."""
    rows = [[v for v in row if v is not None] for row in matrix]
    rows = [row for row in rows if len(row) >= 2]
    return float(np.mean([len(set(row)) == 1 for row in rows])) if rows else float("nan")


def confusion_between_readers(a: Sequence[str], b: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts of (reader a's label, reader b's label); rows follow reader a."""
    index = {label: k for k, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)), dtype=int)
    for x, y in zip(a, b, strict=True):
        if x is not None and y is not None:
            table[index[x], index[y]] += 1
    return table


def agreement_with_consensus(
    matrix: np.ndarray, consensus: Sequence[str | None], readers: list[str]
) -> dict[str, float]:
    """Per reader: share of their readings equal to the consensus label (where both exist)."""
    result = {}
    for j, reader in enumerate(readers):
        pairs = [(matrix[i, j], c) for i, c in enumerate(consensus) if matrix[i, j] is not None and c is not None]
        result[reader] = float(np.mean([x == c for x, c in pairs])) if pairs else float("nan")
    return result


class AttributeStatistics(BaseModel):
    organ: str
    attribute: str
    n_items: int
    kind: str  # "cohen" or "fleiss"
    kappa: float
    raw_agreement: float
    share_c0: float
    labels: list[str]
    readers: list[str]
    confusion: list[list[int]]
    per_reader_agreement: dict[str, float]
    box_iou: dict[str, float]


def attribute_statistics(
    organ: str,
    attribute: str,
    readings: dict[str, dict[str, str]],
    readers: list[str],
    labels: list[str],
    consensus_labels: dict[str, str],
    confidences: Sequence[int],
    box_ious: Sequence[float],
) -> AttributeStatistics:
    """Every figure of one organ × attribute, from item → reader → label and the consensus."""
    matrix = label_matrix(readings, readers)
    items = sorted(readings)
    two = len(readers) == 2
    kappa = cohen_kappa(matrix[:, 0], matrix[:, 1], labels) if two else fleiss_kappa(matrix, labels)
    confusion = confusion_between_readers(matrix[:, 0], matrix[:, 1], labels) if len(readers) >= 2 else np.zeros((0, 0))
    ious = np.asarray(box_ious, dtype=float)
    quantiles = {"mean": float(ious.mean()), **{f"p{q}": float(np.percentile(ious, q)) for q in (10, 50, 90)}}
    return AttributeStatistics(
        organ=organ,
        attribute=attribute,
        n_items=len(items),
        kind="cohen" if two else "fleiss",
        kappa=kappa,
        raw_agreement=raw_agreement(matrix),
        share_c0=float(np.mean([c == 0 for c in confidences])) if confidences else 0.0,
        labels=labels,
        readers=readers,
        confusion=confusion.tolist(),
        per_reader_agreement=agreement_with_consensus(matrix, [consensus_labels.get(i) for i in items], readers),
        box_iou=quantiles if len(ious) else {},
    )


def statistics_markdown(stats: Sequence[AttributeStatistics]) -> str:
    """Per organ: a table of κ, raw agreement, share of c = 0 and box IoU, then per-reader agreement."""
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
            iou_mean = f"{s.box_iou['mean']:.2f}" if s.box_iou else "–"
            lines.append(
                f"| {s.attribute} | {s.n_items} | {s.kappa:.2f} ({s.kind}) | {s.raw_agreement:.2f} | "
                f"{s.share_c0:.2f} | {iou_mean} |"
            )
        lines += ["", "| attribute | " + " | ".join(rows[0].readers) + " |", "|---|" + "---:|" * len(rows[0].readers)]
        for s in rows:
            lines.append(
                f"| {s.attribute} | " + " | ".join(f"{s.per_reader_agreement[r]:.2f}" for r in s.readers) + " |"
            )
        lines.append("")
    return "\n".join(lines)


def plot_confusion(stats: AttributeStatistics, path: Path) -> Path:
    """Heat map of reader A's labels (rows) against reader B's (columns), counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = np.asarray(stats.confusion)
    size = 2.2 + 0.9 * len(stats.labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    ax.imshow(table, cmap="Blues")
    ax.set_xticks(range(len(stats.labels)), stats.labels, rotation=35, ha="right")
    ax.set_yticks(range(len(stats.labels)), stats.labels)
    ax.set_xlabel(f"reader {stats.readers[1]}")
    ax.set_ylabel(f"reader {stats.readers[0]}")
    for (i, j), count in np.ndenumerate(table):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > table.max() / 2 else "black")
    ax.set_title(f"{stats.organ} · {stats.attribute}\nκ = {stats.kappa:.2f}, raw agreement {stats.raw_agreement:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_iou_histogram(organ: str, ious: Sequence[float], path: Path, threshold: float = 0.5) -> Path:
    """Distribution of the readers' box IoU, with the fusion threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(ious, bins=20, range=(0, 1), color="#4C72B0")
    ax.axvline(threshold, color="#C44E52", linestyle="--", label=f"review below {threshold:.2f}")
    ax.set_xlabel("box IoU between readers")
    ax.set_ylabel("images")
    ax.set_title(f"{organ}: reader box agreement (n = {len(ious)})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
