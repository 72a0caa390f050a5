"""The catalog of every record (SQLite in the workspace by default, PostgreSQL by URL)."""

from flows.catalog.store import STAGES, Catalog, Outcome, masked_url, open_catalog

__all__ = ["STAGES", "Catalog", "Outcome", "masked_url", "open_catalog"]
