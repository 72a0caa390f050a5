"""`lookcloser labelstudio up|status|down` on the workspace's own local server."""

from __future__ import annotations

import json
import os

import pytest

from annotation.client import LabelStudioClient
from annotation.server import free_port
from flows.cli.main import main

pytestmark = pytest.mark.integration


def test_up_status_down(workspace, monkeypatch, capsys):
    monkeypatch.setenv("LOOKCLOSER_LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")
    try:
        assert main(["labelstudio", "up"]) == 0
        out = capsys.readouterr().out
        assert "Label Studio is up" in out and "reader-a@lookcloser.local" in out
        credentials_file = workspace / "labelstudio" / "credentials.json"
        assert oct(os.stat(credentials_file).st_mode & 0o777) == "0o600"
        credentials = json.loads(credentials_file.read_text())
        assert credentials["admin"]["token"] not in out and credentials["admin"]["password"] not in out
        for reader in credentials["readers"]:  # each reader's own token works
            url = os.environ["LOOKCLOSER_LABEL_STUDIO_URL"]
            assert LabelStudioClient(url, reader["token"]).whoami()["email"] == reader["email"]

        assert main(["labelstudio", "up"]) == 0  # idempotent: same accounts, same admin
        assert json.loads(credentials_file.read_text())["admin"] == credentials["admin"]
        assert main(["labelstudio", "status"]) == 0
        assert "True" in capsys.readouterr().out
    finally:
        assert main(["labelstudio", "down"]) == 0
    assert main(["labelstudio", "status"]) == 2  # not healthy any more


def test_up_refuses_a_remote_url(workspace, monkeypatch, capsys):
    monkeypatch.setenv("LOOKCLOSER_LABEL_STUDIO_URL", "http://labelstudio.example.org:8080")
    assert main(["labelstudio", "up"]) == 2
    assert "LOOKCLOSER_LABEL_STUDIO_URL" in capsys.readouterr().err
