"""The synthesis report: counts per outcome and quarantine reason, and a few rationales per organ and tone
(`workspace/reports/synthesis/report.md`, and a Prefect artifact)."""

from __future__ import annotations

import random

from flows.teacher.synthesis import SynthesisSummary
from schemas.records import Rationale

SAMPLES_PER_ORGAN_AND_TONE = 2


def report_markdown(summary: SynthesisSummary, rationales: list[Rationale], *, seed: int = 0) -> str:
    """Counts per outcome and per quarantine reason, and a few rationales per organ and tone."""
    lines = [
        "# Teacher synthesis",
        "",
        f"records {summary.records} = produced {summary.produced} + quarantined {sum(summary.quarantined.values())}",
        "",
        "| outcome | count |",
        "|---|---|",
        f"| produced | {summary.produced} |",
        *(f"| quarantined: {reason} | {n} |" for reason, n in sorted(summary.quarantined.items())),
        "",
        f"this run: {summary.requested} items needed the teacher, {summary.calls} teacher calls, "
        f"{summary.cached_calls} answered from the cache, {summary.repaired} repaired, {summary.reseeded} "
        f"re-seeded, {summary.regenerated_for_diversity} regenerated for diversity, "
        f"{summary.near_duplicates_kept} near-duplicates kept at the regeneration limit, "
        f"{summary.removed_stale} stale removed.",
        "",
        "## Samples",
    ]
    rng = random.Random(seed)
    valid = [r for r in rationales if r.valid]
    for organ in sorted({r.organ for r in valid}):
        for confidence, tone in ((1, "definitive (c = 1)"), (0, "cautious (c = 0)")):
            pool = [r for r in valid if r.organ == organ and r.confidence == confidence]
            for r in rng.sample(pool, min(SAMPLES_PER_ORGAN_AND_TONE, len(pool))):
                lines += [
                    f"**{organ}, {r.attribute} = {r.label}, {tone}** — `{r.generator}`",
                    f"- question: {r.question}",
                    f"- search: {r.search}",
                    f"- diagnosis: {r.diagnosis}",
                    "",
                ]
    return "\n".join(lines)
