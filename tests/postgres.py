"""A real PostgreSQL server in a temporary data directory, on 127.0.0.1 (started, restarted, stopped by tests)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        pytest.fail("PostgreSQL is not installed: scripts/ensure-postgres.sh installs it (make test runs it)")
    return Path(initdb).parent


class PostgresServer:
    """initdb once, then start / stop / restart; `url` is the server's base SQLAlchemy URL."""

    def __init__(self) -> None:
        self.bindir = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="lookcloser-pg-"))
        self.port = free_port()
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.dir / "db"), "-A", "trust", "-U", "lookcloser", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://lookcloser@127.0.0.1:{self.port}"

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        subprocess.run([*self._as_postgres, str(self.bindir / program), *args], check=check, capture_output=True)

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.dir / "db"), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session (clients see their connections drop), like a restart in production."""
        self._run("pg_ctl", "-D", str(self.dir / "db"), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self) -> str:
        """An empty database on this server; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{self.url.replace('+psycopg', '')}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started server, destroyed (data directory and all) on exit."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()
