"""JSON Schema of every record, for consumers outside Python (`lookcloser schemas export DIR`)."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.records import RECORD_TYPES


def export_json_schemas(directory: Path) -> list[Path]:
    """Write `<Record>.schema.json` for each record type; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, record in RECORD_TYPES.items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(record.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
