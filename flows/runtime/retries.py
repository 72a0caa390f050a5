"""Which failures a stage outlives: Prefect task retries for outages of the catalog or Label Studio.

Every stage's work is idempotent and resumable (settled items are skipped, writes are upserts in
one transaction per batch), so a task that failed because a server went away mid-run is simply
run again once the server is back: it picks up where the last committed batch left it. Only
transient failures are retried; a wrong setting or a wrong token fails at once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from annotation.client import LabelStudioUnavailableError

# Waits between attempts: long enough for a database or Label Studio restart (tens of seconds)
RETRY_DELAYS_S = [5, 15, 30]


def _exception(state: Any) -> BaseException | None:
    data = getattr(state, "data", None)
    return data if isinstance(data, BaseException) else None


def catalog_outage(err: BaseException | None) -> bool:
    """The database connection failed (server restarted, network cut), not the statement itself."""
    if isinstance(err, OperationalError):
        return True
    return isinstance(err, DBAPIError) and bool(err.connection_invalidated)


def labelstudio_outage(err: BaseException | None) -> bool:
    return isinstance(err, LabelStudioUnavailableError)


def retry_on_catalog_outage(_task: Any, _task_run: Any, state: Any) -> bool:
    return catalog_outage(_exception(state))


def retry_on_outage(_task: Any, _task_run: Any, state: Any) -> bool:
    """Catalog or Label Studio outage (the pull and annotate stages talk to both)."""
    err = _exception(state)
    return catalog_outage(err) or labelstudio_outage(err)


CATALOG_RETRIES: dict[str, Any] = {
    "retries": len(RETRY_DELAYS_S),
    "retry_delay_seconds": RETRY_DELAYS_S,
    "retry_condition_fn": retry_on_catalog_outage,
}
SERVICE_RETRIES: dict[str, Any] = {**CATALOG_RETRIES, "retry_condition_fn": retry_on_outage}
