"""The synthesis engine's one writer thread: teacher replies, rationales and ledger entries committed in
groups, so the event loop never waits on the database and a killed run loses at most the last interval."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from flows.catalog import Catalog, Outcome
from schemas.records import Rationale


class CatalogWriter:
    """Commits cache rows, rationales and ledger entries from one thread, within `interval_s` of arrival.

    Everything that arrives within the interval goes into one transaction (group commit): the event
    loop never blocks on the database, and the writer wakes a few times a second instead of once per
    item (each wake costs the busy event loop a GIL hand-over). A crash loses only what arrived in the
    last interval: those requests are asked again, like requests in flight.
    """

    def __init__(self, catalog: Catalog, *, interval_s: float = 0.1) -> None:
        self.catalog, self.interval_s = catalog, interval_s
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="synthesis-writer", daemon=True)
        self._thread.start()

    def cache(self, row: dict[str, Any]) -> None:
        self._queue.put(("cache", row))

    def settle(self, rationale: Rationale | None, ledger: tuple[str, Outcome, str | None, str | None]) -> None:
        self._queue.put(("settle", (rationale, ledger)))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is not None:
                time.sleep(self.interval_s)  # let the group gather
            batch = [first]
            while len(batch) < 4096:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            items = [b for b in batch if b is not None]
            try:
                self.catalog.save_synthesis(
                    cache_rows=[payload for kind, payload in items if kind == "cache"],
                    rationales=[payload[0] for kind, payload in items if kind == "settle" and payload[0]],
                    ledger=[payload[1] for kind, payload in items if kind == "settle"],
                    forget=[payload[1][0] for kind, payload in items if kind == "settle" and payload[0] is None],
                )
            except BaseException as err:  # surfaced by close(); the thread must not die silently
                self._error = err
                return
            if stop:
                return

    def close(self) -> None:
        """Commit everything queued, then stop; re-raise a write error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
