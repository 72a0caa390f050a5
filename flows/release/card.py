"""The dataset card (`README.md` of a release), generated from the data and the catalog.

Front matter: licence, task, the configs (`all` and one per organ) and the features, so the Hub and
`load_dataset` read the layout from it. Body: how to load exactly this version, counts per organ /
split / label / c, reader agreement (κ, IoU) with the consensus stage's plots, expert acceptance of
the rationales, generator and prompt version, the model frame and crop settings a trainer must
match, the validation result, the pipeline version, and the licence and citation of every source.

Nothing in it changes between identical releases (no dates, no code commit): re-publishing the same
data writes the same bytes, so no new tag is made.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from datasets import DatasetInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from flows.catalog.ledger import StageCounter
from flows.release.rows import FrameSettings
from flows.release.shards import FEATURES
from flows.release.validation import ValidationReport
from schemas.crop import CROP_VERSION
from schemas.trajectory import TRAJECTORY_VERSION

PROVENANCE_FILE = Path(__file__).parents[1] / "ingest" / "sources" / "provenance.yaml"
ASSETS = "assets"  # plots inside the release folder, linked from the card
NOT_DECLARED = "not declared"


@dataclass(kw_only=True)
class CardFacts(StageCounter):
    """What the card states about the rows (collected while they stream): every consensus record is a row
    (out) or not published for a reason (quarantined); and the rows per organ and split, label, generator, source."""

    stage: str = "publish"
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # organ, split
    labels: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)  # organ, attribute, label, c
    generators: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)

    @property
    def rows(self) -> int:
        return self.out


@dataclass(frozen=True)
class CardContext:
    """What the card states beyond the rows: settings and the earlier stages' reports."""

    name: str
    frames: FrameSettings
    agreement_markdown: str = ""
    agreement_origin: str = ""  # one sentence: the consensus stage's saved report, or measured at release time
    plots: dict[str, tuple[str, ...]] = field(default_factory=dict)  # organ → paths relative to the release folder
    acceptance: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, dict[str, str | None]] = field(default_factory=dict)
    hub_repo_id: str | None = None
    deidentification_markdown: str = ""  # flows.reports.deidentification: per source, cut / masked / quarantined


def load_provenance(workspace_file: Path | None = None) -> dict[str, dict[str, str | None]]:
    """Licence and citation per source adapter; the workspace's declarations win over the bundled ones."""
    entries = yaml.safe_load(PROVENANCE_FILE.read_text())["sources"]
    if workspace_file is not None and workspace_file.exists():
        for source, entry in (yaml.safe_load(workspace_file.read_text()) or {}).get("sources", {}).items():
            entries[source] = {**entries.get(source, {}), **(entry or {})}
    return entries


def pipeline_version() -> str:
    try:
        return f"lookcloser {importlib.metadata.version('lookcloser')}"
    except importlib.metadata.PackageNotFoundError:
        return "lookcloser (not installed)"


def front_matter(name: str, facts: CardFacts, provenance: dict[str, dict[str, str | None]]) -> str:
    organs = sorted({organ for organ, _ in facts.counts})
    splits = sorted({split for _, split in facts.counts})
    configs: dict[str, Any] = {
        "all": {"data_files": [{"split": s, "path": f"data/*/{s}-*"} for s in splits], "default": True},
    }
    for organ in organs:
        files = [{"split": split, "path": f"data/{organ}/{split}-*"} for (o, split) in facts.counts if o == organ]
        configs[organ] = {"data_files": files}
    card = DatasetCardData(
        pretty_name=name,
        license=hub_licence(facts, provenance),
        task_categories=["visual-question-answering"],
        tags=["medical", "ultrasound", *organs, "tool-use", "uncertainty"],
        size_categories=[size_category(facts.rows)],
    )
    DatasetInfosDict({"all": DatasetInfo(config_name="all", features=FEATURES)}).to_dataset_card_data(card)
    MetadataConfigs(configs).to_dataset_card_data(card)
    return f"---\n{card.to_yaml()}\n---\n"


def hub_licence(facts: CardFacts, provenance: dict[str, dict[str, str | None]]) -> str:
    """The Hub's licence id: the sources' one licence when they share an SPDX-like id, else "other"."""
    licences = {(provenance.get(source) or {}).get("licence") or "" for source in facts.sources}
    if len(licences) == 1 and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+-]*", licence := licences.pop()):
        return licence.lower()
    return "other"


def size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "n>1M"


def _demote(markdown: str) -> list[str]:
    """An earlier stage's report as a subsection: its title dropped, its headings one level down."""
    lines = markdown.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return [f"#{line}" if line.startswith("#") else line for line in lines]


def _loading(name: str, hub_repo_id: str | None) -> list[str]:
    lines = [
        "## Load exactly one version",
        "",
        "Every release is a git tag `vMAJOR.MINOR.PATCH` of this folder. `load_dataset(folder, revision=...)`",
        "ignores `revision` for a local folder, so ask for a folder that holds exactly the tag:",
        "",
        "```python",
        "import subprocess",
        "from datasets import load_dataset",
        "",
        f'command = ["lookcloser", "dataset", "path", "{name}", "--version", "v1.0.0"]',
        "path = subprocess.check_output(command, text=True)",
        'rows = load_dataset(path.strip(), "all")  # or one organ, e.g. "breast"',
        "```",
    ]
    if hub_repo_id:
        lines += [
            "",
            "From the Hub (the same tags are pushed there):",
            "",
            "```python",
            "from datasets import load_dataset",
            "from huggingface_hub import snapshot_download",
            "",
            f'rows = load_dataset(snapshot_download("{hub_repo_id}", repo_type="dataset", revision="v1.0.0"), "all")',
            "```",
        ]
    return [*lines, ""]


def _counts(facts: CardFacts, context: CardContext) -> list[str]:
    organs = sorted({organ for organ, _ in facts.counts})
    splits = sorted({split for _, split in facts.counts})
    lines = [
        "## Rows",
        "",
        "| organ | " + " | ".join(splits) + " | total |",
        "|---|" + "---:|" * (len(splits) + 1),
    ]
    for organ in organs:
        cells = [facts.counts.get((organ, split), 0) for split in splits]
        lines.append(f"| {organ} | " + " | ".join(map(str, cells)) + f" | {sum(cells)} |")
    totals = [sum(n for (_, s), n in facts.counts.items() if s == split) for split in splits]
    lines.append("| **all** | " + " | ".join(map(str, totals)) + f" | {facts.rows} |")
    lines += [
        "",
        "Labels and confidence (c = 1: the readers agreed, definitive wording; c = 0: they disagreed, cautious",
        "wording):",
        "",
        *(f"![labels {organ}]({plots[0]})" for organ, plots in sorted(context.plots.items()) if plots),
        "",
        "<details><summary>the same as a table</summary>",
        "",
        "| organ | attribute | label | c = 1 | c = 0 |",
        "|---|---|---|---:|---:|",
    ]
    keys = sorted({(o, a, lab) for o, a, lab, _ in facts.labels})
    for organ, attribute, label in keys:
        lines.append(
            f"| {organ} | {attribute} | {label} | {facts.labels[(organ, attribute, label, 1)]} | "
            f"{facts.labels[(organ, attribute, label, 0)]} |"
        )
    lines += ["", "</details>"]
    if facts.quarantined:
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(facts.quarantined.items()))
        lines += ["", f"Consensus records not published, by reason: {skipped}."]
    return [*lines, ""]


def _agreement(context: CardContext) -> list[str]:
    lines = ["## Reader agreement", ""]
    if not context.agreement_markdown:
        return [*lines, "No dual reading in this release (labels from the sources' metadata).", ""]
    if context.agreement_origin:
        lines += [context.agreement_origin, ""]
    lines += [*_demote(context.agreement_markdown), ""]
    for organ, plots in sorted(context.plots.items()):
        if len(plots) > 1:  # the first is the label plot, shown with the counts
            lines += [f"### {organ}: reader against reader, and box IoU", ""]
            lines += [f"![{Path(plot).stem}]({plot})" for plot in plots[1:]]
            lines.append("")
    return lines


def _acceptance(context: CardContext) -> list[str]:
    lines = ["## Expert review of the rationales", ""]
    if not context.acceptance:
        return [*lines, "No rationale of this release was sampled for expert review.", ""]
    lines += [
        "| organ / tone | sampled | reviewed | accepted | rejected | acceptance |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stratum, e in context.acceptance.items():
        rate = "–" if e["acceptance_rate"] is None else f"{e['acceptance_rate']:.0%}"
        lines.append(f"| {stratum} | {e['sampled']} | {e['reviewed']} | {e['accepted']} | {e['rejected']} | {rate} |")
    return [*lines, ""]


def _generation(facts: CardFacts, frames: FrameSettings) -> list[str]:
    return [
        "## How the rows were made",
        "",
        "Each row is a Zoom-then-Diagnose conversation: the question with the image, the assistant's search and a",
        "`<tool_call>` with the lesion box (`bbox_2d`, pixels of the model frame), the zoomed crop, then the",
        "diagnosis and `<answer>`. `images` is `[model-frame image, crop]`; the box and answer come from the",
        "readers' consensus, the prose from the teacher.",
        "",
        "| generator (backend/model/prompt) | rows |",
        "|---|---:|",
        *(f"| `{g}` | {n} |" for g, n in sorted(facts.generators.items())),
        "",
        "Model frame and crop (use the same at SFT, GRPO and inference, or the boxes will not match):",
        "",
        f"- `min_pixels` {frames.min_pixels}, `max_pixels` {frames.max_pixels} (Qwen2.5-VL smart resize)",
        f"- crop padding {frames.crop_padding} of the box; crop function `{CROP_VERSION}`",
        f"- conversation format `{TRAJECTORY_VERSION}`",
        "",
    ]


def _validation(report: ValidationReport | None) -> list[str]:
    if report is None:
        return ["## Validation", "", "Not validated.", ""]
    result = "passed" if report.success else "FAILED"
    return [
        "## Validation",
        "",
        f"Great Expectations suite `{report.suite}`: {result}, {report.expectations} expectations on "
        f"{report.rows} rows (ids unique; vocabulary; c ∈ {{0, 1}}; boxes inside the model frame; crops ≥ 28 px;",
        "the conversation's box and answer equal the columns; tone matches c; one image per placeholder; no",
        "patient or near-duplicate group in two splits; cross-domain organs only in test; c = 0 share and label",
        "shares within bounds). The Data Docs are kept next to the release folder.",
        "",
    ]


def _sources(facts: CardFacts, provenance: dict[str, dict[str, str | None]]) -> list[str]:
    lines = ["## Sources, licences and citations", "", "| source | rows | licence | citation |", "|---|---:|---|---|"]
    for source, n in sorted(facts.sources.items()):
        entry = provenance.get(source) or {}
        citation = " ".join((entry.get("citation") or NOT_DECLARED).split())
        lines.append(f"| {source} | {n} | {entry.get('licence') or NOT_DECLARED} | {citation} |")
    if any(not (provenance.get(s) or {}).get("licence") for s in facts.sources):
        lines += ["", f"A source marked *{NOT_DECLARED}* needs its terms declared in `WORKSPACE/provenance.yaml`."]
    return [*lines, ""]


def card_text(facts: CardFacts, context: CardContext, report: ValidationReport | None) -> str:
    organs = ", ".join(sorted({organ for organ, _ in facts.counts}))
    body = [
        f"# {context.name}",
        "",
        f"{facts.rows} ultrasound visual question answering rows ({organs}) with confidence-toned Zoom-then-Diagnose",
        "rationales: a box to zoom into, the crop, and an answer worded definitively where two sonographers",
        "agreed and cautiously where they did not (`confidence`, c). Made by lookcloser.",
        "",
        *_loading(context.name, context.hub_repo_id),
        *_counts(facts, context),
        *_agreement(context),
        *_acceptance(context),
        *_generation(facts, context.frames),
        *_validation(report),
        *_sources(facts, context.provenance),
        *([context.deidentification_markdown] if context.deidentification_markdown else []),
        "## Pipeline",
        "",
        f"{pipeline_version()}; suite `{report.suite if report else '-'}`; {CROP_VERSION}; {TRAJECTORY_VERSION}.",
        "",
    ]
    return front_matter(context.name, facts, context.provenance) + "\n" + "\n".join(body)
