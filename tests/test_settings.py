import pytest

from flows.runtime.settings import SettingsError, load_settings


def test_defaults_live_in_the_workspace(workspace):
    settings = load_settings()
    assert settings.resolved_catalog_url == f"sqlite:///{(workspace / 'catalog.sqlite').resolve()}"
    assert settings.resolved_image_store_url == str((workspace / "images").resolve())


def test_secrets_never_show_in_repr_or_str(workspace, monkeypatch):
    monkeypatch.setenv("LOOKCLOSER_HUB_TOKEN", "hf_SECRET")
    monkeypatch.setenv("LOOKCLOSER_PATIENT_KEY_SALT", "salt-SECRET-of-20-bytes")
    settings = load_settings()
    assert "SECRET" not in repr(settings) and "SECRET" not in str(settings)
    assert settings.salt() == b"salt-SECRET-of-20-bytes"


def test_generated_salt_is_stable_and_private(workspace):
    first = load_settings().salt()
    assert first == load_settings().salt() and len(first) == 64
    assert (workspace / "patient_key_salt.secret").stat().st_mode & 0o077 == 0


def test_teacher_urls_accept_a_comma_separated_list(workspace, monkeypatch):
    monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", "http://a:8000/v1, http://b:8000/v1")
    assert [str(u) for u in load_settings().teacher_base_urls] == ["http://a:8000/v1", "http://b:8000/v1"]


def test_malformed_value_is_a_settings_error_naming_the_variable(workspace, monkeypatch):
    monkeypatch.setenv("LOOKCLOSER_LABEL_STUDIO_URL", "ftp//nope")
    with pytest.raises(SettingsError, match="LOOKCLOSER_LABEL_STUDIO_URL"):
        load_settings()
