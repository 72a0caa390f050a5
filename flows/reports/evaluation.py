"""The evaluation report: per-organ tables in the layout of the paper's Tables 1 and 2, CSV, and plots.

Table 1: Acc (consensus samples) and mIoU; Table 2: SAcc, Align, ECE and Entropy Gap. One row per organ
and one for all samples. Plots per organ: a reliability diagram (accuracy of ŷ against ĉ per bin) and the
histogram of predictive entropy on c = 1 and c = 0 samples.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from schemas.metrics import Metrics, SampleResult, compute_metrics, consensus, entropy, is_correct


def _fmt(value: float, percent: bool = True) -> str:
    if math.isnan(value):
        return "–"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def metrics_by_organ(results: Sequence[SampleResult], *, delta: float, bins: int) -> dict[str, Metrics]:
    organs = sorted({r.organ for r in results})
    table = {
        organ: compute_metrics([r for r in results if r.organ == organ], delta=delta, bins=bins) for organ in organs
    }
    table["all"] = compute_metrics(results, delta=delta, bins=bins)
    return table


def report_markdown(table: dict[str, Metrics], *, title: str, delta: float, bins: int) -> str:
    lines = [
        f"# {title}",
        "",
        "## Table 1: accuracy and localisation (greedy decoding)",
        "",
        "| organ | samples | consensus samples | Acc (%) | mIoU (%) |",
        "|---|---:|---:|---:|---:|",
        *(f"| {o} | {m.n} | {m.n_consensus} | {_fmt(m.acc)} | {_fmt(m.miou)} |" for o, m in table.items()),
        "",
        f"## Table 2: uncertainty alignment (sampled rollouts, δ = {delta}, ECE over {bins} bins)",
        "",
        "| organ | SAcc (%) | Align (%) | ECE ↓ | Entropy Gap ↑ | mean ĉ |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {o} | {_fmt(m.sacc)} | {_fmt(m.align)} | {_fmt(m.ece, False)} | {_fmt(m.entropy_gap, False)} | "
            f"{_fmt(m.mean_share, False)} |"
            for o, m in table.items()
        ),
        "",
        "Acc: greedy answer = consensus label, on c = 1 samples. mIoU: greedy zoom box against the consensus box",
        "(model frame; no box = 0). ŷ, ĉ: mode of the sampled answers and its share; SAcc: accuracy of ŷ where",
        "ĉ ≥ δ; Align: share where 1[ĉ ≥ δ] = c; Entropy Gap: mean entropy of the answers on c = 0 minus c = 1.",
        "Unparsable rollouts are one answer class of their own. – : no sample to compute it on.",
        "",
    ]
    return "\n".join(lines)


def write_csv(table: dict[str, Metrics], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["organ", *asdict(next(iter(table.values())))])
        writer.writeheader()
        for organ, m in table.items():
            writer.writerow({"organ": organ, **asdict(m)})
    return path


def _pyplot():  # noqa: ANN202 (matplotlib module)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(organ: str, results: Sequence[SampleResult], path: Path, *, bins: int) -> Path:
    """Accuracy of ŷ per ĉ bin against the diagonal; bar width = bin, bar label = samples in it."""
    plt = _pyplot()
    shares, hits = [], []
    for r in results:
        if r.sampled_answers:
            mode, share = consensus(r.sampled_answers)
            shares.append(share)
            hits.append(is_correct(mode, r.label))
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", label="perfect calibration")
    index = np.clip(np.searchsorted(edges, np.asarray(shares), side="right") - 1, 0, bins - 1)
    for b in range(bins):
        members = index == b
        if members.any():
            accuracy = float(np.asarray(hits)[members].mean())
            ax.bar(edges[b], accuracy, width=1 / bins, align="edge", color="#4C72B0", edgecolor="white")
            ax.text(edges[b] + 0.5 / bins, accuracy + 0.02, str(int(members.sum())), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("ĉ (share of rollouts giving the mode)")
    ax.set_ylabel("accuracy of the mode")
    ax.set_title(f"{organ}: reliability (n = {len(shares)})", fontsize=10)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_entropy(organ: str, results: Sequence[SampleResult], path: Path) -> Path:
    """Histogram of predictive entropy of the sampled answers, c = 1 against c = 0."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    top = max((math.log(len(r.sampled_answers)) for r in results if r.sampled_answers), default=1.0) or 1.0
    for c, color, name in ((1, "#4C72B0", "c = 1 (readers agreed)"), (0, "#DD8452", "c = 0 (readers disagreed)")):
        values = [entropy(r.sampled_answers) for r in results if r.confidence == c and r.sampled_answers]
        ax.hist(values, bins=12, range=(0, top), alpha=0.6, color=color, label=f"{name}, n = {len(values)}")
    ax.set_xlabel("predictive entropy of the sampled answers (nats)")
    ax.set_ylabel("samples")
    ax.set_title(f"{organ}: entropy by reader agreement", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    results: Sequence[SampleResult], folder: Path, *, title: str, delta: float, bins: int
) -> tuple[str, list[Path]]:
    """report.md, metrics.csv and two plots per organ into `folder`; returns the markdown and the files."""
    folder.mkdir(parents=True, exist_ok=True)
    table = metrics_by_organ(results, delta=delta, bins=bins)
    markdown = report_markdown(table, title=title, delta=delta, bins=bins)
    files = [write_csv(table, folder / "metrics.csv")]
    plots = []
    for organ in sorted({r.organ for r in results}):
        subset = [r for r in results if r.organ == organ]
        plots += [
            plot_reliability(organ, subset, folder / f"reliability-{organ}.png", bins=bins),
            plot_entropy(organ, subset, folder / f"entropy-{organ}.png"),
        ]
    markdown += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    (folder / "report.md").write_text(markdown)
    return markdown, [*files, folder / "report.md", *plots]
