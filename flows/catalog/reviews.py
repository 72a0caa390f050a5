"""Expert review of rationales: the review tasks sent to Label Studio and the verdicts brought back."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.catalog.base import CatalogBase, Outcome
from flows.catalog.tables import (
    RationaleReviewRow,
    RationaleRow,
)


class ReviewsRepository(CatalogBase):
    def reviews(self) -> list[dict[str, Any]]:
        """Every rationale sampled for expert review, with its verdict (None while pending)."""
        with Session(self.engine) as session:
            return [
                {c.name: getattr(row, c.name) for c in RationaleReviewRow.__table__.columns}
                for row in session.scalars(select(RationaleReviewRow).order_by(RationaleReviewRow.image_id))
            ]

    def save_review_tasks(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rationales sent to review (`image_id, attribute, cache_key, organ, confidence, ls_*`), verdict pending.

        A regenerated rationale (new cache key) sent again starts a new review: the old verdict was not about it.
        """
        now = datetime.now(UTC)
        rows = [{**row, "sampled_at": now, "verdict": None, "reason": None, "reviewer": None} for row in rows]
        with Session(self.engine) as session, session.begin():
            self._upsert(session, RationaleReviewRow.__table__, rows, ["image_id", "attribute"])

    def save_review_verdicts(self, verdicts: Iterable[tuple[str, str, str, str | None, str | None]]) -> int:
        """Apply `(image_id:attribute, cache_key, verdict, reason, reviewer)`; a rejection quarantines the rationale.

        A verdict for a rationale that has since been regenerated (another cache key) is kept on the review
        row but does not touch the new rationale. Returns how many rationales were rejected now.
        """
        now, rejected = datetime.now(UTC), 0
        with Session(self.engine) as session, session.begin():
            for key, cache_key, verdict, reason, reviewer in verdicts:
                image_id, attribute = key.split(":", 1)
                review = session.get(RationaleReviewRow, (image_id, attribute))
                if review is None or review.cache_key != cache_key:
                    continue
                review.verdict, review.reason, review.reviewer, review.reviewed_at = verdict, reason, reviewer, now
                rationale = session.get(RationaleRow, (image_id, attribute))
                if verdict != "reject" or rationale is None or rationale.cache_key != cache_key or not rationale.valid:
                    continue
                rationale.valid = False
                rationale.validation_errors = ["expert_rejected", reason or "no_reason_given"]
                self._record_items(
                    session, "synthesize", [(key, Outcome.quarantined, "expert_rejected", rationale.base_key)], now
                )
                rejected += 1
        return rejected
