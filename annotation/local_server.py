"""The embedded default's Label Studio: a local server in its own venv, its accounts and credentials.

`lookcloser labelstudio up` builds the server venv when missing, starts the server on the URL of
the settings (127.0.0.1 only), creates two reader accounts through the invite link and writes the
credentials (mode 600) into the workspace. Production points the same client at any Label Studio
URL instead (`LOOKCLOSER_LABEL_STUDIO_URL`, `..._TOKEN`, `..._READERS_FILE`).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from annotation.access import LabelStudioSettings, read_credentials, write_credentials
from annotation.accounts import create_reader
from annotation.server import LabelStudioServer
from annotation.server_build import ensure_labelstudio_venv, prepare_data_dir
from schemas.environment import ENV_PREFIX
from schemas.vocabulary import registered_organs

DEMO_READERS = (("reader-a@lookcloser.local", "R1"), ("reader-b@lookcloser.local", "R2"))
DEMO_ADJUDICATOR = ("adjudicator@lookcloser.local", "A1")


class LocalServerError(Exception):
    """The local server cannot be managed with these settings (one line)."""


def local_server(settings: LabelStudioSettings, credentials: dict[str, Any] | None = None) -> LabelStudioServer:
    """The server object for the workspace (reusing the admin credentials of an earlier start)."""
    url = urlparse(str(settings.label_studio_url))
    if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
        raise LocalServerError(
            f"{ENV_PREFIX}LABEL_STUDIO_URL={url.geturl()} is not a local http://127.0.0.1:PORT address; "
            "`lookcloser labelstudio` manages only the local server"
        )
    admin = (credentials or read_credentials(settings)).get("admin", {})
    Path(settings.label_studio_files_root).mkdir(parents=True, exist_ok=True)  # the image store it serves
    return LabelStudioServer(
        data_dir=settings.labelstudio_dir / "data",
        port=url.port,
        files_root=settings.label_studio_files_root,
        venv=ensure_labelstudio_venv(),
        admin_password=admin.get("password") or secrets.token_urlsafe(18),
        admin_token=admin.get("token") or secrets.token_hex(20),
    )


def up(settings: LabelStudioSettings) -> tuple[LabelStudioServer, dict[str, Any]]:
    """Start (or find running) the local server, make sure the reader accounts exist; return both."""
    credentials = read_credentials(settings)
    server = local_server(settings, credentials)
    prepare_data_dir(server.data_dir)
    server.start()  # a no-op when this workspace's server runs; refuses a port taken by anything else
    credentials["admin"] = {"email": server.admin_email, "password": server.admin_password, "token": server.admin_token}
    known = {r["email"]: r for r in credentials.get("readers", [])}
    readers = []
    for email, pseudonym in (*DEMO_READERS, DEMO_ADJUDICATOR):
        password = known.get(email, {}).get("password") or secrets.token_urlsafe(12)
        token = create_reader(server.url, server.admin_token, email, password)
        readers.append({"email": email, "pseudonym": pseudonym, "password": password, "token": token})
    credentials["readers"] = readers
    credentials.setdefault("organs", {organ: [email for email, _ in DEMO_READERS] for organ in registered_organs()})
    credentials.setdefault("adjudicators", dict.fromkeys(registered_organs(), DEMO_ADJUDICATOR[0]))
    write_credentials(settings, credentials)
    return server, credentials


def down(settings: LabelStudioSettings) -> bool:
    """Stop the local server by PID; False if it was not running."""
    server = local_server(settings)
    running = server.pid() is not None
    server.stop()
    return running


def status(settings: LabelStudioSettings) -> dict[str, object]:
    return local_server(settings).status()
