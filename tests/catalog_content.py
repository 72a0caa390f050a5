"""A catalog's content as comparable data: every table's rows, without ids and times (they differ between runs)."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, select

from flows.catalog.tables import Base

# Surrogate keys and timestamps: two runs that catalogue the same things still differ in these
VOLATILE_COLUMNS = {
    "id",
    "created_at",
    "updated_at",
    "decided_at",
    "checked_at",
    "sampled_at",
    "reviewed_at",
    "withdrawn_at",
}


def catalog_content(url: str) -> dict[str, list[str]]:
    """table → sorted rows (JSON), every column but the volatile ones."""
    engine = create_engine(url)
    content: dict[str, list[str]] = {}
    try:
        with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                columns = [c for c in table.columns if c.name not in VOLATILE_COLUMNS]
                rows = conn.execute(select(*columns)).all()
                content[table.name] = sorted(json.dumps(list(row), default=str, sort_keys=True) for row in rows)
    finally:
        engine.dispose()
    return content


def content_difference(left: dict[str, list[str]], right: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Per table that differs: how many rows only the left and only the right has (empty when equal)."""
    differences = {}
    for table in sorted(set(left) | set(right)):
        a, b = set(left.get(table, [])), set(right.get(table, []))
        duplicates = len(left.get(table, [])) - len(a) + len(right.get(table, [])) - len(b)
        if a != b or duplicates:
            differences[table] = {"only_left": len(a - b), "only_right": len(b - a), "duplicated": duplicates}
    return differences
