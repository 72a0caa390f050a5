"""The stage ledger's rules and `StageCounter`, the one tally every stage keeps of its run.

Every item a stage sees ends as exactly one of: out (it became a record), quarantined (with a
snake_case reason), or skipped (settled by an earlier run, so a re-run rewrites nothing). In the
catalog's ledger, which holds every settled item, that reads `in = out + quarantined`; within one
run, `seen = out + quarantined + skipped`, and `StageCounter.check()` fails loudly when it does not
hold. Stage-specific counts (imported tasks, disputes, teacher calls...) are fields of a thin
subclass; `add` sums every count field, so such a subclass merges without code of its own.

Pure Python on purpose: stage logic can count without importing the database layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

STAGES = ("ingest", "annotate", "pull", "consensus", "synthesize", "publish")


class Outcome(StrEnum):
    out = "out"
    quarantined = "quarantined"


# one ledger row as stages hand it to the catalog: (item_key, outcome, reason, record_key)
LedgerItem = tuple[str, Outcome, str | None, str | None]


class LedgerMismatchError(ValueError):
    """A stage's counts do not add up: some item was neither out, quarantined nor skipped (or twice)."""


def ledger_rows(stage: str, items: Iterable[LedgerItem], now: datetime) -> list[dict[str, Any]]:
    """The catalog rows of ledger items, checked: a known stage, and a reason exactly when quarantined."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    rows = []
    for item_key, outcome, reason, record_key in items:
        if (outcome == Outcome.quarantined) != (reason is not None):
            raise ValueError(f"{stage} item {item_key}: a reason is given exactly when quarantined")
        rows.append(
            {
                "stage": stage,
                "item_key": item_key,
                "outcome": str(outcome),
                "reason": reason,
                "record_key": record_key,
                "updated_at": now,
            }
        )
    return rows


class StageLedger(Protocol):
    """What `StageCounter.record` needs of the catalog."""

    def record_stage_items(self, stage: str, items: Iterable[LedgerItem]) -> None: ...


@dataclass(kw_only=True)
class StageCounter:
    """One stage run's counts, and the ledger items it has not handed to the catalog yet."""

    stage: str
    seen: int = 0
    out: int = 0
    skipped: int = 0  # settled by an earlier run
    quarantined: dict[str, int] = field(default_factory=dict)  # reason → items
    # kept only for items counted with a key; a stage that writes no ledger (exports) keeps none
    ledger: list[LedgerItem] = field(default_factory=list, repr=False, compare=False)

    # ---------------------------------------------------------------------------------- counting
    def count_out(self, item_key: str | None = None, *, record_key: str | None = None) -> None:
        """One item became a record; with `item_key`, it also goes to the ledger."""
        self.seen += 1
        self.out += 1
        if item_key is not None:
            self.ledger.append((item_key, Outcome.out, None, record_key))

    def count_quarantined(self, reason: str, item_key: str | None = None, *, record_key: str | None = None) -> None:
        """One item was set aside for `reason`; `record_key` may name what it duplicates."""
        self.seen += 1
        self.quarantined[reason] = self.quarantined.get(reason, 0) + 1
        if item_key is not None:
            self.ledger.append((item_key, Outcome.quarantined, reason, record_key))

    def count_skipped(self, n: int = 1) -> None:
        """`n` items an earlier run already settled (they stay in the ledger as they were)."""
        self.seen += n
        self.skipped += n

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    # ---------------------------------------------------------------------------------- checking
    def check(self) -> StageCounter:
        """Raise `LedgerMismatchError` unless seen = out + quarantined + skipped; returns self."""
        if self.seen != self.out + self.quarantined_total + self.skipped:
            raise LedgerMismatchError(
                f"{self.stage}: {self.seen} seen != {self.out} out + {self.quarantined_total} quarantined "
                f"+ {self.skipped} skipped"
            )
        return self

    # ---------------------------------------------------------------------------------- combining
    def add(self, other: StageCounter) -> None:
        """Count another run's (a batch's, a shard's) items into this one: every int and per-key count field."""
        for f in fields(self):
            if f.name == "ledger" or not hasattr(other, f.name):
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, bool):
                continue  # a flag, not a count
            if isinstance(mine, int):
                setattr(self, f.name, mine + theirs)
            elif isinstance(mine, dict):
                for key, n in theirs.items():
                    mine[key] = mine.get(key, 0) + n
        self.ledger.extend(other.ledger)

    # ---------------------------------------------------------------------------------- recording
    def take_ledger(self) -> list[LedgerItem]:
        """The ledger items counted since the last take, for a catalog write (which may carry records too)."""
        taken, self.ledger = self.ledger, []
        return taken

    def record(self, catalog: StageLedger) -> None:
        """Write the pending ledger items to the catalog's stage ledger on their own."""
        catalog.record_stage_items(self.stage, self.take_ledger())

    # ---------------------------------------------------------------------------------- showing
    def as_dict(self) -> dict[str, Any]:
        """Every field but the pending ledger, per-key counts as plain dicts (a JSON report, a log line)."""
        result = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "ledger":
                result[f.name] = dict(value) if isinstance(value, dict) else value
        return result

    def line(self) -> str:
        """`ingest: 5 seen = 3 out + 1 quarantined {'unreadable_image': 1} + 1 skipped`."""
        reasons = f" {dict(sorted(self.quarantined.items()))}" if self.quarantined else ""
        return (
            f"{self.stage}: {self.seen} seen = {self.out} out + {self.quarantined_total} quarantined{reasons} "
            f"+ {self.skipped} skipped"
        )
