"""Consensus records and the decisions behind them (label, fused box, c), written by the consensus stage."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from flows.catalog.base import CatalogBase, Outcome, record
from flows.catalog.tables import (
    ConsensusDecisionRow,
    ConsensusRow,
    StageItemRow,
)
from schemas.records import (
    ConsensusRecord,
)


class DecisionsRepository(CatalogBase):
    def consensus_hashes(self) -> dict[str, str]:
        """`image_id:attribute` → hash of the inputs its current consensus decision was taken from."""
        query = select(StageItemRow.item_key, StageItemRow.record_key).where(StageItemRow.stage == "consensus")
        with Session(self.engine) as session:
            return {key: digest or "" for key, digest in session.execute(query)}

    def save_consensus(
        self, decisions: Iterable[tuple[str, str, ConsensusRecord | None, str | None, str | None, str]]
    ) -> None:
        """Apply `(image_id, attribute, record, rule, reason, inputs_hash)` decisions atomically.

        A record is upserted; a quarantined decision removes an earlier record; every decision is
        appended to the audit trail and settles the ledger entry (keyed by its inputs hash).
        """
        now = datetime.now(UTC)
        decisions = list(decisions)
        with Session(self.engine) as session, session.begin():
            records = [record.model_dump(mode="json") for _, _, record, _, _, _ in decisions if record is not None]
            self._upsert(session, ConsensusRow.__table__, records, ["image_id", "attribute"])
            for image_id, attribute, record, _, _, _ in decisions:
                if record is None:
                    session.execute(
                        delete(ConsensusRow).where(
                            ConsensusRow.image_id == image_id, ConsensusRow.attribute == attribute
                        )
                    )
            session.add_all(
                ConsensusDecisionRow(
                    image_id=image_id,
                    attribute=attribute,
                    label=record.label if record else None,
                    confidence=record.confidence if record else None,
                    rule=rule,
                    reason=reason,
                    inputs_hash=digest,
                    decided_at=now,
                )
                for image_id, attribute, record, rule, reason, digest in decisions
            )
            ledger = [
                (
                    f"{image_id}:{attribute}",
                    Outcome.out if record else Outcome.quarantined,
                    reason if not record else None,
                    digest,
                )
                for image_id, attribute, record, rule, reason, digest in decisions
            ]
            self._record_items(session, "consensus", ledger, now)

    def consensus_records(self, organ: str | None = None) -> list[ConsensusRecord]:
        query = select(ConsensusRow).order_by(ConsensusRow.image_id, ConsensusRow.attribute)
        if organ:
            query = query.where(ConsensusRow.organ == organ)
        with Session(self.engine) as session:
            return [record(ConsensusRecord, row) for row in session.scalars(query)]

    def decisions(self, image_id: str) -> list[dict[str, Any]]:
        """The audit trail of one image, oldest first."""
        query = select(ConsensusDecisionRow).where(ConsensusDecisionRow.image_id == image_id)
        with Session(self.engine) as session:
            return [
                {c.name: getattr(row, c.name) for c in ConsensusDecisionRow.__table__.columns}
                for row in session.scalars(query.order_by(ConsensusDecisionRow.id))
            ]
