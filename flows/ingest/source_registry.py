"""The local source registry: where each source's files are, kept out of Prefect.

A source folder is often named after a patient or a study (`SMITH^JOHN_MRN…`). A flow parameter is
stored in Prefect's database and shown in its UI, and a failing run persists it, so ingest parameters
never carry a path: they carry a source id (`src-` and a salted hash of the kind and the resolved
location), and the location lives only here, in `source_registry.json` in the workspace (mode 600).
Registering the same location again returns the same id; a Prefect deployment names a source by
the id that `lookcloser ingest` (or `register_location`) printed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import tempfile
from pathlib import Path

from filelock import FileLock

REGISTRY_FILE = "source_registry.json"
SOURCE_ID = re.compile(r"^src-[0-9a-f]{16}$")


class UnknownSourceError(LookupError):
    """A source id that this workspace's registry does not hold (one-line message, no path)."""


def is_source_id(value: str) -> bool:
    return SOURCE_ID.match(value) is not None


def _location(kind: str, location: str, local: bool) -> str:
    return str(Path(location).expanduser().resolve()) if local else location


def source_id_for(salt: bytes, kind: str, location: str) -> str:
    return "src-" + hmac.new(salt, f"source:{kind}:{location}".encode(), hashlib.sha256).hexdigest()[:16]


def _read(workspace: Path) -> dict[str, dict[str, str]]:
    path = workspace / REGISTRY_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def register_location(workspace: Path, salt: bytes, kind: str, location: str, *, local: bool) -> str:
    """The source id of `location` (registered now if new); the registry is rewritten atomically."""
    resolved = _location(kind, location, local)
    source_id = source_id_for(salt, kind, resolved)
    if _read(workspace).get(source_id, {}).get("location") == resolved:
        return source_id
    workspace.mkdir(parents=True, exist_ok=True)
    # two runs registering at once must not lose each other's entry: read-modify-write under a file lock
    with FileLock(workspace / f".{REGISTRY_FILE}.lock"):
        return _add_entry(workspace, source_id, kind, location, resolved)


def _add_entry(workspace: Path, source_id: str, kind: str, location: str, resolved: str) -> str:
    entries = _read(workspace)
    if entries.get(source_id, {}).get("location") == resolved:
        return source_id
    # the scope names the source in its items' refs (hashed before storage): the last part of the location
    entries[source_id] = {"kind": kind, "location": resolved, "scope": Path(location.rstrip("/")).name or location}
    fd, tmp = tempfile.mkstemp(dir=workspace, prefix=".source_registry.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, workspace / REGISTRY_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return source_id


def resolve_source(workspace: Path, source_id: str) -> dict[str, str]:
    """The entry registered under `source_id`: its kind, location and scope."""
    entry = _read(workspace).get(source_id)
    if entry is None:
        raise UnknownSourceError(
            f"source {source_id} is not in this workspace's {REGISTRY_FILE}: run `lookcloser ingest KIND PATH` "
            "here once (it registers the path), or point LOOKCLOSER_WORKSPACE at the workspace that registered it"
        )
    return entry
