"""De-identification report: per source, what was cut, masked and quarantined (ingest report and dataset card).

A site audits de-identification with it (docs/operator.md): how many images were cut to a region the
source gave or to a scan area found from the pixels, how many had burned-in text masked and of what
kind, how many show measurement marks (a known shortcut), and how many were quarantined for a
de-identification reason. Counts come from the catalog: the image records' notes and the ingest ledger.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.catalog import Catalog
from flows.catalog.tables import ImageRow, StageItemRow

DEID_REASONS = ("scan_area_not_found", "burned_in_text_found", "burned_in_text_unredacted")
COLUMNS = (
    "images",
    "cut to source region",
    "cut to found scan area",
    "text masked",
    "measurement marks",
    *DEID_REASONS,
)


def deidentification_counts(catalog: Catalog) -> dict[str, Counter[str]]:
    """source → counts of COLUMNS (ingested images and ingest quarantines)."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    with Session(catalog.engine) as session:
        for source, note in session.execute(select(ImageRow.source, ImageRow.deidentification)):
            counts = table[source]
            counts["images"] += 1
            if not note:
                continue
            counts[
                "cut to source region" if note.get("scan_area") == "source_region" else "cut to found scan area"
            ] += 1
            counts["text masked"] += int(note.get("text_lines_masked", 0) > 0)
            counts["measurement marks"] += int(bool(note.get("measurement_marks")))
        quarantined = select(StageItemRow.item_key, StageItemRow.reason).where(
            StageItemRow.stage == "ingest", StageItemRow.reason.in_(DEID_REASONS)
        )
        for item_key, reason in session.execute(quarantined):
            table[item_key.split(":", 1)[0]][reason] += 1
    return dict(sorted(table.items()))


def deidentification_markdown(counts: dict[str, Counter[str]], *, heading: str = "##") -> str:
    """The table as Markdown, with one sentence on what the numbers mean."""
    lines = [
        f"{heading} De-identification",
        "",
        "Per source: images cut to the ultrasound region the source gave (DICOM) or to the scan area found",
        "from the pixels, images whose burned-in text was found by OCR and masked, images showing measurement",
        "marks (calipers, readouts), and source items quarantined because their pixels could not be verified.",
        "",
    ]
    if not counts:
        return "\n".join([*lines, "No images.", ""])
    lines += ["| source | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| {source} | " + " | ".join(str(c[col]) for col in COLUMNS) + " |" for source, c in counts.items()]
    return "\n".join([*lines, ""])
