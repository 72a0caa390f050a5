"""The patient-key salt (issue 19): never empty or short, created atomically and privately, kept under a visible
name (a legacy `.patient_key_salt` still counts), and tied to the catalog by a one-way fingerprint."""

from __future__ import annotations

import multiprocessing
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from flows.catalog import Catalog
from flows.catalog.base import SaltMismatchError
from flows.runtime.settings import (
    LEGACY_SALT_FILE_NAME,
    MIN_SALT_BYTES,
    SALT_FILE_NAME,
    Settings,
    SettingsError,
    load_settings,
    salt_fingerprint,
)

SETTING = "LOOKCLOSER_PATIENT_KEY_SALT"
LEGACY_SALT = b"0123456789abcdef" * 4  # what the old code wrote: 64 hex digits


ROUNDS, PROCESSES = 10, 4


def _salts_of(workspaces: list[str], barrier: Any, out: Any) -> None:
    """In a fresh process: for each workspace, wait for every other process, then take the salt at once."""
    for workspace in workspaces:
        barrier.wait()
        out.put((workspace, Settings(workspace=Path(workspace)).salt()))


# --- the setting ---------------------------------------------------------------------------------------------------


def test_an_empty_setting_is_an_error_naming_it(workspace, monkeypatch):
    monkeypatch.setenv(SETTING, "")
    with pytest.raises(SettingsError, match=f"^{SETTING} is empty") as error:
        load_settings().salt()
    assert "\n" not in str(error.value)
    assert not (workspace / SALT_FILE_NAME).exists()  # not silently replaced by a generated salt


def test_a_short_setting_is_an_error_and_the_minimum_is_accepted(workspace, monkeypatch):
    monkeypatch.setenv(SETTING, "x" * (MIN_SALT_BYTES - 1))
    with pytest.raises(SettingsError, match=f"^{SETTING} is {MIN_SALT_BYTES - 1} bytes") as error:
        load_settings().salt()
    assert "\n" not in str(error.value) and "x" * (MIN_SALT_BYTES - 1) not in str(error.value)
    monkeypatch.setenv(SETTING, "y" * MIN_SALT_BYTES)
    assert load_settings().salt() == b"y" * MIN_SALT_BYTES


# --- the file ------------------------------------------------------------------------------------------------------


def test_a_generated_salt_is_private_visible_and_stable(workspace):
    salt = load_settings().salt()
    path = workspace / SALT_FILE_NAME
    assert not SALT_FILE_NAME.startswith(".")  # `cp workspace/* elsewhere/` takes it along
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(salt) == 64 and path.read_bytes().strip() == salt
    assert load_settings().salt() == salt
    assert sorted(p.name for p in workspace.iterdir()) == [SALT_FILE_NAME]  # no temp file left behind


@pytest.mark.parametrize("content", [b"", b"\n", b"short-salt\n"])
def test_an_empty_or_short_salt_file_is_an_error_and_never_regenerated(workspace, content):
    workspace.mkdir(parents=True)
    path = workspace / SALT_FILE_NAME
    path.write_bytes(content)
    with pytest.raises(SettingsError, match=f"salt file {path} is") as error:
        load_settings().salt()
    assert "\n" not in str(error.value) and SETTING in str(error.value) and "backup" in str(error.value)
    assert path.read_bytes() == content


def test_processes_creating_the_salt_together_all_get_the_same_one(tmp_path):
    context = multiprocessing.get_context("spawn")  # fresh interpreters: nothing shared but the file system
    workspaces = [str(tmp_path / f"ws{n}") for n in range(ROUNDS)]
    barrier, out = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=_salts_of, args=(workspaces, barrier, out)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    salts: dict[str, set[bytes]] = {}
    for _ in range(ROUNDS * PROCESSES):
        workspace, salt = out.get(timeout=120)
        salts.setdefault(workspace, set()).add(salt)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for workspace in workspaces:
        assert salts[workspace] == {(Path(workspace) / SALT_FILE_NAME).read_bytes()}
        assert stat.S_IMODE((Path(workspace) / SALT_FILE_NAME).stat().st_mode) == 0o600
        assert [p.name for p in Path(workspace).iterdir()] == [SALT_FILE_NAME]


def test_threads_creating_the_salt_together_all_get_the_same_one(tmp_path):
    workspace = tmp_path / "ws"
    barrier, salts = threading.Barrier(16), []

    def salt() -> None:
        barrier.wait()
        salts.append(Settings(workspace=workspace).salt())

    threads = [threading.Thread(target=salt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(salts) == 16 and len(set(salts)) == 1


def test_a_legacy_dotfile_is_honoured_and_moved_to_the_visible_name(workspace):
    workspace.mkdir(parents=True)
    legacy = workspace / LEGACY_SALT_FILE_NAME
    legacy.write_bytes(LEGACY_SALT)
    legacy.chmod(0o600)
    assert load_settings().salt() == LEGACY_SALT
    visible = workspace / SALT_FILE_NAME
    assert visible.read_bytes() == LEGACY_SALT and stat.S_IMODE(visible.stat().st_mode) == 0o600
    assert not legacy.exists()
    assert load_settings().salt() == LEGACY_SALT


def test_an_empty_legacy_dotfile_is_an_error_not_a_new_salt(workspace):
    workspace.mkdir(parents=True)
    (workspace / LEGACY_SALT_FILE_NAME).write_bytes(b"")
    with pytest.raises(SettingsError, match=LEGACY_SALT_FILE_NAME):
        load_settings().salt()
    assert not (workspace / SALT_FILE_NAME).exists()


def test_a_plain_copy_of_the_workspace_keeps_its_salt(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    salt = Settings(workspace=old).salt()
    new.mkdir()
    for path in old.glob("*"):  # what `cp old/* new/` copies: no dotfiles
        shutil.copy2(path, new / path.name)
    assert Settings(workspace=new).salt() == salt


# --- the catalog's fingerprint -------------------------------------------------------------------------------------


def test_the_fingerprint_is_short_stable_one_way_and_tells_salts_apart():
    salt = b"a" * 32
    fingerprint = salt_fingerprint(salt)
    assert fingerprint == salt_fingerprint(b"a" * 32) and len(fingerprint) == 16
    assert int(fingerprint, 16) >= 0 and "a" * 8 not in fingerprint
    assert salt_fingerprint(b"b" * 32) != fingerprint


def test_the_catalog_binds_the_first_salt_and_refuses_another(catalog_url, tmp_path):
    salt, other = Settings(workspace=tmp_path / "a").salt(), Settings(workspace=tmp_path / "b").salt()
    catalog = Catalog(catalog_url)
    try:
        assert catalog.bound_salt_fingerprint() is None
        catalog.bind_salt_fingerprint(salt_fingerprint(salt))
        assert catalog.bound_salt_fingerprint() == salt_fingerprint(salt)
        catalog.bind_salt_fingerprint(salt_fingerprint(salt))  # the same salt: fine, any number of times
        with pytest.raises(SaltMismatchError, match="another patient-key salt") as error:
            catalog.bind_salt_fingerprint(salt_fingerprint(other))
        message = str(error.value)
        assert SETTING in message and SALT_FILE_NAME in message and "backup" in message and "\n" not in message
        assert salt.decode() not in message and other.decode() not in message
        assert catalog.bound_salt_fingerprint() == salt_fingerprint(salt)  # the first one stays
    finally:
        catalog.close()


def test_the_catalog_stores_a_fingerprint_never_the_salt(tmp_path):
    salt = Settings(workspace=tmp_path / "ws").salt()
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    catalog = Catalog(url)
    catalog.bind_salt_fingerprint(salt_fingerprint(salt))
    catalog.close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT key, value FROM catalog_settings")).all()
    finally:
        engine.dispose()
    assert rows == [("salt_fingerprint", salt_fingerprint(salt))]
    stored = rows[0][1]
    assert salt.decode() not in stored and salt.decode()[:16] not in stored and salt.hex()[:16] not in stored
    assert salt not in (tmp_path / "c.sqlite").read_bytes()


def test_two_first_binds_at_once_leave_one_fingerprint(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    Catalog(url).close()  # migrated once, before the race
    barrier, outcomes = threading.Barrier(2), []

    def bind(fingerprint: str) -> None:
        catalog = Catalog(url)
        try:
            barrier.wait()
            catalog.bind_salt_fingerprint(fingerprint)
            outcomes.append("bound")
        except SaltMismatchError:
            outcomes.append("refused")
        finally:
            catalog.close()

    threads = [threading.Thread(target=bind, args=(salt_fingerprint(bytes([n]) * 32),)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["bound", "refused"]


def test_an_ingest_with_another_salt_on_a_keyed_catalog_is_refused(workspace, monkeypatch):
    """The ingest stage binds the catalog to its salt: a second run with another salt stops with one line."""
    from flows.runtime.settings import SettingsError, load_settings
    from flows.stages.ingest import register_source
    from flows.stages.params import IngestParams

    monkeypatch.setenv("LOOKCLOSER_PATIENT_KEY_SALT", "the first salt of this catalog")
    register_source(IngestParams(kind="phantom", count=2), load_settings())
    monkeypatch.setenv("LOOKCLOSER_PATIENT_KEY_SALT", "another salt, from a lost backup")
    with pytest.raises(SettingsError, match="LOOKCLOSER_PATIENT_KEY_SALT"):  # one line, exit code 2 in the CLI
        register_source(IngestParams(kind="phantom", count=2), load_settings())
