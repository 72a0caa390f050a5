"""The catalog of every record (SQLite in the workspace by default, PostgreSQL by URL), and the stage ledger."""

from flows.catalog.ledger import LedgerMismatchError, StageCounter
from flows.catalog.store import STAGES, Catalog, Outcome, masked_url, open_catalog

__all__ = ["STAGES", "Catalog", "LedgerMismatchError", "Outcome", "StageCounter", "masked_url", "open_catalog"]
