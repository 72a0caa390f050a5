"""Stage locks: one lease per stage (and per release name for publish) on the catalog, so two runs of the same
stage never work on the same catalog at once, whether they come from the CLI or a Prefect deployment.

`with stage_lock(settings.resolved_catalog_url, "ingest"):` around a stage flow's body. A second taker waits up
to `wait_seconds`, polling, then gets a one-line `StageBusyError` that says who holds the lease.

The leases are the databases' and operating systems' own, so a killed run's lease ends with it, without cleanup:
- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`, the key a stable 64-bit hash of the lock
  name) on a dedicated autocommit connection held for the stage's duration; it ends when that connection closes.
  The connection's `application_name` is `lookcloser-lock:<pid>@<host>:<lock name>`, so the refusal (and an
  operator, through `pg_locks` joined with `pg_stat_activity`) can say who holds it.
- SQLite: an OS file lock (the `filelock` package: `flock` on POSIX) on `<catalog file>.<lock name>.lock`
  beside the catalog, released by the OS when the process dies; `<that>.json` says who holds it (pid, host,
  lock name, start time: no paths, no secrets).
An in-memory SQLite catalog belongs to one process, so it needs no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from flows.runtime.settings import SettingsError

__all__ = ["DEFAULT_WAIT_SECONDS", "StageBusyError", "lock_key", "lock_path", "stage_lock"]

log = logging.getLogger(__name__)

DEFAULT_WAIT_SECONDS = 0.0  # a busy stage is refused at once: the CLI and deployments say so rather than queue
POLL_SECONDS = 0.2
APPLICATION_PREFIX = "lookcloser-lock:"
DOCS_HINT = 'see docs/operator.md "A stage is busy"'
_PG_NAME_MAX = 63  # PostgreSQL truncates application_name to NAMEDATALEN - 1 bytes
# the server notices a lock holder's vanished host within ~1 minute instead of the system's default 2 hours
_PG_OPTIONS = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"


class StageBusyError(SettingsError):
    """Another run holds the stage's lease: one line naming the stage and the holder (the CLI's exit code 2)."""


def lock_key(name: str) -> int:
    """The lock's PostgreSQL advisory key: a stable signed 64-bit hash of its name (the same in every process)."""
    digest = hashlib.sha256(f"lookcloser stage lock\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _slug(name: str) -> str:
    """The name as a file-name part; a name that had to change gets a short hash, so two names never share one."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return slug if slug == name else f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def lock_path(catalog_url: str, name: str) -> Path | None:
    """The SQLite lock file of `name` beside the catalog file; None for an in-memory catalog (one process only)."""
    database = make_url(catalog_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    catalog = Path(database).resolve()
    return catalog.with_name(f"{catalog.name}.{_slug(name)}.lock")


def _host() -> str:
    return socket.gethostname() or "unknown host"


def _when(started: datetime) -> str:
    """`10:02 UTC`, with the date when it is not today (UTC)."""
    started = started.astimezone(UTC)
    return f"{started:%H:%M} UTC" if started.date() == datetime.now(UTC).date() else f"{started:%Y-%m-%d %H:%M} UTC"


def _busy(name: str, holder: str) -> StageBusyError:
    return StageBusyError(f"{name} is already running ({holder}); wait for it or, if that process is gone, {DOCS_HINT}")


def _describe(pid: Any, host: Any, started: datetime | None) -> str:
    since = f" since {_when(started)}" if started else ""
    return f"pid {pid} on {host}{since}"


@contextlib.contextmanager
def stage_lock(catalog_url: str, name: str, *, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> Iterator[None]:
    """Hold the lease `name` on the catalog at `catalog_url` for the `with` block.

    Waits up to `wait_seconds` (0: one try) for another holder to finish, then raises `StageBusyError`.
    """
    dialect = make_url(catalog_url).get_backend_name()
    if dialect == "postgresql":
        with _postgres_lock(catalog_url, name, wait_seconds):
            yield
    elif dialect == "sqlite":
        with _sqlite_lock(catalog_url, name, wait_seconds):
            yield
    else:
        raise SettingsError(f"stage locks need a SQLite or PostgreSQL catalog, not {dialect}")


# ------------------------------------------------------------------------------------------------------ SQLite
@contextlib.contextmanager
def _sqlite_lock(catalog_url: str, name: str, wait_seconds: float) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path = lock_path(catalog_url, name)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    holder_file = path.with_name(path.name + ".json")
    lock = FileLock(path, thread_local=False, **_native_only())
    if wait_seconds > 0:
        log.info("waiting up to %.0f s for the %s lock", wait_seconds, name)
    try:
        lock.acquire(timeout=max(wait_seconds, 0.0), poll_interval=POLL_SECONDS)
    except Timeout:
        raise _busy(name, _sqlite_holder(holder_file)) from None
    try:
        record = {"pid": os.getpid(), "host": _host(), "stage": name, "started": datetime.now(UTC).isoformat()}
        partial = holder_file.with_name(f"{holder_file.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(record) + "\n")
        os.replace(partial, holder_file)
        yield
    finally:
        with contextlib.suppress(OSError):
            holder_file.unlink()
        lock.release()


def _native_only() -> dict[str, bool]:
    """filelock 4 falls back to an existence lock where `flock` is missing (ENOSYS); such a lock would outlive a
    killed run, so it is refused instead (older filelock raises there anyway)."""
    import inspect

    from filelock import FileLock

    return {"fallback_to_soft": False} if "fallback_to_soft" in inspect.signature(FileLock).parameters else {}


def _sqlite_holder(holder_file: Path) -> str:
    try:
        record = json.loads(holder_file.read_text())
        started = datetime.fromisoformat(record["started"])
        return _describe(record["pid"], record["host"], started)
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not recorded yet"


# -------------------------------------------------------------------------------------------------- PostgreSQL
@contextlib.contextmanager
def _postgres_lock(catalog_url: str, name: str, wait_seconds: float) -> Iterator[None]:
    key = lock_key(name)
    application = f"{APPLICATION_PREFIX}{os.getpid()}@{_host()[:30]}:{name}"[:_PG_NAME_MAX]
    engine = create_engine(
        catalog_url, poolclass=NullPool, connect_args={"application_name": application, "options": _PG_OPTIONS}
    )
    try:
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")  # no transaction held open
        try:
            _take_advisory(conn, name, key, wait_seconds)
            # the last statement on this connection: pg_stat_activity.query_start is when the lease was taken
            conn.execute(text("SELECT set_config('application_name', :a, false)"), {"a": application})
            try:
                yield
            finally:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                except Exception as err:  # a lost connection (a server restart) has already ended the lease
                    log.warning(
                        "the %s lock's connection was lost (%s); its lease ended with it", name, type(err).__name__
                    )
        finally:
            with contextlib.suppress(Exception):
                conn.close()
    finally:
        engine.dispose()


def _take_advisory(conn: Connection, name: str, key: int, wait_seconds: float) -> None:
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    if wait_seconds > 0:
        log.info("waiting up to %.0f s for the %s lock", wait_seconds, name)
    while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
        left = deadline - time.monotonic()
        if left <= 0:
            raise _busy(name, _postgres_holder(conn, key))
        time.sleep(min(POLL_SECONDS, left))


def _postgres_holder(conn: Connection, key: int) -> str:
    """Who holds the advisory key: from pg_locks (classid/objid: the key's high and low 32 bits, objsubid 1)."""
    row = conn.execute(
        text(
            "SELECT a.pid, a.application_name, a.query_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid::bigint = CAST(:hi AS bigint) AND l.objid::bigint = CAST(:lo AS bigint)"
        ),
        {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
    ).first()
    if row is None:
        return "holder gone since; try again"
    backend, application, started = row
    if application and application.startswith(APPLICATION_PREFIX):
        pid, _, host = application.removeprefix(APPLICATION_PREFIX).split(":", 1)[0].partition("@")
        return _describe(pid, host or "unknown host", started)
    return f"PostgreSQL backend {backend}" + (f" since {_when(started)}" if started else "")
