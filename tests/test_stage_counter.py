"""StageCounter: the one tally of a stage run (seen = out + quarantined + skipped), its ledger items and
stage-specific counts of a thin subclass, as the stages' *Summary classes will use it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from flows.catalog import LedgerMismatchError, Outcome, StageCounter
from flows.catalog.ledger import ledger_rows


@dataclass(kw_only=True)
class PullCounter(StageCounter):
    """A thin subclass the way a stage keeps its own counts (PullSummary's disputes)."""

    stage: str = "pull"
    organ: str
    disputed: int = 0
    per_reader: dict[str, int] = field(default_factory=dict)

    @property
    def pulled(self) -> int:  # the stage's own word for `out`
        return self.out


def test_every_item_is_out_quarantined_or_skipped_and_the_counts_add_up():
    counter = StageCounter(stage="ingest")
    counter.count_out("a", record_key="img-a")
    counter.count_out("b", record_key="img-b")
    counter.count_quarantined("unreadable_image", "c")
    counter.count_quarantined("near_duplicate", "d", record_key="img-a")
    counter.count_skipped(3)
    assert (counter.seen, counter.out, counter.skipped) == (7, 2, 3)
    assert counter.quarantined == {"unreadable_image": 1, "near_duplicate": 1}
    assert counter.quarantined_total == 2
    assert counter.check() is counter
    assert counter.ledger == [
        ("a", Outcome.out, None, "img-a"),
        ("b", Outcome.out, None, "img-b"),
        ("c", Outcome.quarantined, "unreadable_image", None),
        ("d", Outcome.quarantined, "near_duplicate", "img-a"),
    ]


def test_the_invariant_check_fails_when_an_item_is_lost():
    counter = StageCounter(stage="pull")
    counter.count_out("a")
    counter.seen += 1  # an item seen and then neither settled nor skipped: a bug in the stage
    with pytest.raises(LedgerMismatchError, match=r"pull: 2 seen != 1 out \+ 0 quarantined \+ 0 skipped"):
        counter.check()


def test_the_invariant_check_fails_when_an_item_is_counted_twice():
    counter = StageCounter(stage="consensus", seen=1, out=1, quarantined={"no_readings": 1})
    with pytest.raises(LedgerMismatchError):
        counter.check()


def test_items_counted_without_a_key_leave_no_ledger_rows():
    counter = StageCounter(stage="export")  # exports write files, not ledger rows: memory must not grow
    for _ in range(1000):
        counter.count_out()
    assert counter.out == 1000 and counter.ledger == []


def test_take_ledger_hands_over_the_pending_items_once():
    counter = StageCounter(stage="annotate")
    counter.count_out("img-1", record_key="img-1")
    assert counter.take_ledger() == [("img-1", Outcome.out, None, "img-1")]
    assert counter.take_ledger() == []
    assert counter.out == 1  # the counts stay


def test_record_writes_the_pending_items_to_a_ledger():
    class FakeLedger:
        def __init__(self) -> None:
            self.calls: list[tuple[str, list]] = []

        def record_stage_items(self, stage, items):
            self.calls.append((stage, list(items)))

    ledger = FakeLedger()
    counter = StageCounter(stage="annotate")
    counter.count_out("img-1", record_key="img-1")
    counter.record(ledger)
    counter.record(ledger)
    assert ledger.calls == [("annotate", [("img-1", Outcome.out, None, "img-1")]), ("annotate", [])]


def test_add_merges_the_counts_of_batches_and_the_extra_counts_of_a_subclass():
    total = PullCounter(organ="liver")
    for reader in ("r1", "r2"):
        batch = PullCounter(organ="liver")
        batch.count_out(f"{reader}:1")
        batch.count_quarantined("empty_annotation", f"{reader}:2")
        batch.count_skipped()
        batch.disputed = 2
        batch.per_reader[reader] = 1
        total.add(batch)
    assert (total.seen, total.pulled, total.skipped, total.disputed) == (6, 2, 2, 4)
    assert total.quarantined == {"empty_annotation": 2}
    assert total.per_reader == {"r1": 1, "r2": 1}
    assert total.organ == "liver" and total.stage == "pull"  # text fields are not summed
    assert len(total.ledger) == 4
    total.check()


def test_add_leaves_flags_alone():
    @dataclass(kw_only=True)
    class ReleaseCounter(StageCounter):
        stage: str = "publish"
        created: bool = False

    first, second = ReleaseCounter(created=True), ReleaseCounter(created=True)
    first.add(second)
    assert first.created is True


def test_as_dict_and_line_show_the_counts():
    counter = PullCounter(organ="liver")
    counter.count_out("a")
    counter.count_quarantined("empty_annotation", "b")
    counter.count_skipped()
    counter.disputed = 1
    assert counter.as_dict() == {
        "stage": "pull",
        "seen": 3,
        "out": 1,
        "skipped": 1,
        "quarantined": {"empty_annotation": 1},
        "organ": "liver",
        "disputed": 1,
        "per_reader": {},
    }
    assert counter.line() == "pull: 3 seen = 1 out + 1 quarantined {'empty_annotation': 1} + 1 skipped"
    assert StageCounter(stage="ingest").line() == "ingest: 0 seen = 0 out + 0 quarantined + 0 skipped"


def test_ledger_rows_keep_the_catalog_rules():
    with pytest.raises(ValueError, match="unknown stage"):
        ledger_rows("export", [], now=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly when quarantined"):
        ledger_rows("ingest", [("a", Outcome.quarantined, None, None)], now=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly when quarantined"):
        ledger_rows("ingest", [("a", Outcome.out, "why", None)], now=None)  # type: ignore[arg-type]
