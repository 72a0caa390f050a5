"""A real Label Studio server for tests (a helper module, not a conftest: a fixture decides its scope)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from annotation.access import write_credentials
from annotation.accounts import create_reader
from annotation.server import LabelStudioServer, free_port
from annotation.server_build import ensure_labelstudio_venv, prepare_data_dir
from flows.runtime.settings import Settings
from schemas.vocabulary import registered_organs


@contextlib.contextmanager
def running_labelstudio(tmp_dir: Path) -> Iterator[LabelStudioServer]:
    """A server on a free 127.0.0.1 port, its data dir copied from the pre-migrated template; stopped by PID.

    Builds the venv and the template first when they are missing (scripts/ensure-labelstudio.sh does it ahead).
    """
    data_dir = prepare_data_dir(tmp_dir / "labelstudio")
    files_root = tmp_dir / "files"
    files_root.mkdir(parents=True, exist_ok=True)
    server = LabelStudioServer(
        data_dir=data_dir, port=free_port(), files_root=files_root, venv=ensure_labelstudio_venv()
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


def register_readers(
    server: LabelStudioServer, settings: Settings, accounts: tuple[tuple[str, str], ...]
) -> list[dict[str, str]]:
    """Create the accounts `(email, pseudonym)` (reader A, reader B, adjudicator) and write the credentials file.

    The first two read every organ, the third adjudicates every organ. Returns the reader entries.
    """
    readers = []
    for email, pseudonym in accounts:
        token = create_reader(server.url, server.admin_token, email, "pw-" + pseudonym * 6)
        readers.append({"email": email, "pseudonym": pseudonym, "token": token})
    write_credentials(
        settings,
        {
            "admin": {"token": server.admin_token},
            "readers": readers,
            "organs": {organ: [r["email"] for r in readers[:2]] for organ in registered_organs()},
            "adjudicators": dict.fromkeys(registered_organs(), readers[2]["email"]),
        },
    )
    return readers
