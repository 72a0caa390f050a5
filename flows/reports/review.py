"""Expert acceptance of teacher rationales, per organ and tone, from the catalog (no Prefect: the card reads it)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flows.catalog import Catalog


def acceptance(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Per organ and tone: sampled, reviewed, accepted, rejected (by reason) and the acceptance rate."""
    table: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"sampled": 0, "reviewed": 0, "accepted": 0, "rejected": 0, "reasons": {}}
    )
    for row in catalog.reviews():
        entry = table[f"{row['organ']}/{'definitive' if row['confidence'] else 'cautious'}"]
        entry["sampled"] += 1
        if row["verdict"] is None:
            continue
        entry["reviewed"] += 1
        if row["verdict"] == "accept":
            entry["accepted"] += 1
        else:
            entry["rejected"] += 1
            entry["reasons"][row["reason"]] = entry["reasons"].get(row["reason"], 0) + 1
    for entry in table.values():
        entry["acceptance_rate"] = round(entry["accepted"] / entry["reviewed"], 3) if entry["reviewed"] else None
    return dict(sorted(table.items()))


def acceptance_markdown(table: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Expert review of teacher rationales",
        "",
        "| organ / tone | sampled | reviewed | accepted | rejected | acceptance | rejection reasons |",
        "|---|---|---|---|---|---|---|",
    ]
    for stratum, e in table.items():
        rate = "—" if e["acceptance_rate"] is None else f"{e['acceptance_rate']:.0%}"
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(e["reasons"].items())) or "—"
        lines.append(
            f"| {stratum} | {e['sampled']} | {e['reviewed']} | {e['accepted']} | {e['rejected']} | {rate} | {reasons} |"
        )
    return "\n".join(lines)
