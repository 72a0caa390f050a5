"""Credentials for Label Studio: the admin token and the reader accounts, from settings or the workspace.

The local server (`lookcloser labelstudio up`) writes `credentials.json` (mode 600) into its folder
in the workspace; a production deployment sets `LOOKCLOSER_LABEL_STUDIO_TOKEN` and points
`LOOKCLOSER_READERS_FILE` at a file of the same shape. Tokens and e-mails stay in these files:
the catalog only ever sees pseudonyms.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from pydantic import AnyHttpUrl, SecretStr

from annotation.client import LabelStudioClient
from annotation.projects import ReaderAccount, ReaderAssignment
from schemas.environment import ENV_PREFIX

CREDENTIALS_NAME = "credentials.json"


class LabelStudioSettings(Protocol):
    """What annotation reads from the settings (flows' `Settings` has these; annotation never imports flows)."""

    label_studio_url: AnyHttpUrl
    label_studio_token: SecretStr | None
    readers_file: Path | None

    @property
    def labelstudio_dir(self) -> Path: ...

    @property
    def label_studio_files_root(self) -> str: ...


class LabelStudioNotConfiguredError(Exception):
    """No token or no reader accounts: a one-line message naming the setting."""


def credentials_path(settings: LabelStudioSettings) -> Path:
    return settings.readers_file or settings.labelstudio_dir / CREDENTIALS_NAME


def read_credentials(settings: LabelStudioSettings) -> dict[str, Any]:
    path = credentials_path(settings)
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def write_credentials(settings: LabelStudioSettings, credentials: dict[str, Any]) -> Path:
    """Write the local server's credentials readable by the owner only."""
    path = settings.labelstudio_dir / CREDENTIALS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(credentials, fh, indent=2)
    tmp.replace(path)
    return path


def admin_client(settings: LabelStudioSettings) -> LabelStudioClient:
    token = settings.label_studio_token.get_secret_value() if settings.label_studio_token else None
    token = token or read_credentials(settings).get("admin", {}).get("token")
    if not token:
        raise LabelStudioNotConfiguredError(
            f"no Label Studio token: set {ENV_PREFIX}LABEL_STUDIO_TOKEN or run `lookcloser labelstudio up`"
        )
    return LabelStudioClient(str(settings.label_studio_url), token)


def load_assignment(settings: LabelStudioSettings) -> ReaderAssignment:
    credentials = read_credentials(settings)
    if not credentials.get("readers"):
        raise LabelStudioNotConfiguredError(
            f"no reader accounts: set {ENV_PREFIX}READERS_FILE or run `lookcloser labelstudio up`"
        )
    readers = [ReaderAccount(email=r["email"], pseudonym=r["pseudonym"]) for r in credentials["readers"]]
    return ReaderAssignment(
        readers=readers,
        organs={o: tuple(e) for o, e in credentials["organs"].items()},
        adjudicators=credentials.get("adjudicators", {}),
    )


def reader_client(settings: LabelStudioSettings, email: str) -> LabelStudioClient:
    """A client authenticated as one reader (simulated readers post as themselves)."""
    for reader in read_credentials(settings).get("readers", []):
        if reader["email"].lower() == email.lower() and reader.get("token"):
            return LabelStudioClient(str(settings.label_studio_url), reader["token"])
    raise LabelStudioNotConfiguredError(f"no token for a reader account in {credentials_path(settings).name}")
