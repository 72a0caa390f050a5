"""One `Settings` for URLs, paths and secrets (environment variables `LOOKCLOSER_*` or `.env`).

Secrets are `SecretStr`: printing or logging a `Settings` shows `**********`. Run choices (counts,
organs, thresholds) are flow parameters, not settings; training hyper-parameters live in recipes.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.environment import ENV_PREFIX
from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

__all__ = [
    "ENV_PREFIX",
    "LEGACY_SALT_FILE_NAME",
    "MIN_SALT_BYTES",
    "SALT_FILE_NAME",
    "SALT_SETTING",
    "Settings",
    "SettingsError",
    "load_settings",
    "salt_fingerprint",
]

# A patient key is HMAC-SHA256(salt, patient id). Patient ids are guessable (MRNs, study numbers), so the salt is the
# only thing that keeps a key from being reversed by hashing candidate ids: an empty or short salt (an empty file
# left by a killed run, an empty variable) must stop the run, never silently weaken the keys. 16 bytes = 128 bits.
MIN_SALT_BYTES = 16
SALT_FILE_NAME = "patient_key_salt.secret"  # visible, so `cp workspace/* elsewhere/` takes it along
LEGACY_SALT_FILE_NAME = ".patient_key_salt"  # before issue 19; still read, and moved to SALT_FILE_NAME
SALT_SETTING = f"{ENV_PREFIX}PATIENT_KEY_SALT"
_FINGERPRINT_LABEL = b"lookcloser patient-key salt fingerprint v1"


class SettingsError(Exception):
    """Misconfiguration, with a one-line message naming the variable."""


def salt_fingerprint(salt: bytes) -> str:
    """A one-way fingerprint of the salt (HMAC-SHA256 of a fixed label keyed with it, 16 hex digits): what the
    catalog stores to notice a changed salt. It tells salts apart without revealing or helping to guess one."""
    return hmac.new(salt, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]


def _checked_salt(salt: bytes, what: str, remedy: str) -> bytes:
    """`salt`, unless it is empty or shorter than MIN_SALT_BYTES: then a one-line SettingsError naming `what`."""
    if not salt.strip():
        raise SettingsError(f"{what} is empty: {remedy}")
    if len(salt) < MIN_SALT_BYTES:
        raise SettingsError(
            f"{what} is {len(salt)} bytes, under the {MIN_SALT_BYTES} a patient-key salt needs: {remedy}"
        )
    return salt


def _read_salt_file(path: Path) -> bytes:
    """The salt in `path`; an empty or short file is an error, never replaced: the catalog may be keyed with the
    lost salt, and a new one would give every patient a second key."""
    remedy = (
        f"it is not replaced, since the catalog may be keyed with the lost salt; restore the file from a backup, "
        f"or set {SALT_SETTING} to the salt the catalog was keyed with"
    )
    return _checked_salt(path.read_bytes().strip(), f"the patient-key salt file {path}", remedy)


def _create_if_absent(path: Path, content: bytes) -> None:
    """Write `content` to `path` unless it exists, atomically: a private temp file in the same folder (mode 600,
    fsynced) hard-linked to the final name, which fails when another process got there first (its file wins)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp, path)  # O_EXCL on the final name: never replaces a salt another process wrote
        except FileExistsError:
            return
        except OSError as err:  # a file system without hard links: rename, unless the name appeared meanwhile
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            if path.exists():
                return
            os.replace(temp, path)
        _fsync_folder(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    workspace: Path = Field(default=Path("workspace"), description="folder for the embedded catalog, images, releases")
    catalog_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in the workspace")
    image_store_url: str | None = Field(default=None, description="fsspec URL; default: a folder in the workspace")
    task_runner: Literal["local", "dask", "ray"] = Field(
        default="local",
        description="where ingest and synthesis spread their work: threads of the flow's process, Dask or Ray",
    )
    dask_address: str | None = Field(
        default=None, description="Dask scheduler, e.g. tcp://10.0.0.5:8786; default: a local cluster per run"
    )
    ray_address: str | None = Field(default=None, description="Ray cluster, e.g. ray://10.0.0.5:10001; default: local")
    workers: int = Field(default=2, ge=1, le=1024, description="worker processes of a local Dask or Ray cluster")
    label_studio_url: AnyHttpUrl = Field(default=AnyHttpUrl("http://127.0.0.1:8089"))
    label_studio_token: SecretStr | None = Field(
        default=None, description="admin API token; default: the local server's, kept in the workspace"
    )
    label_studio_document_root: str | None = Field(
        default=None,
        description="Label Studio's LOCAL_FILES_DOCUMENT_ROOT; the image store is a folder inside it "
        "(default: the folder that holds the image store)",
    )
    readers_file: Path | None = Field(
        default=None, description="JSON reader accounts and organ assignment; default: the local server's"
    )
    teacher_base_urls: Annotated[list[AnyHttpUrl], NoDecode] = Field(
        default_factory=list, description="OpenAI-compatible replicas, comma-separated"
    )
    teacher_api_key: SecretStr | None = None
    teacher_model: str = Field(
        default="Qwen/Qwen2.5-VL-72B-Instruct", description="the served model name the replicas answer to"
    )
    min_pixels: int = Field(default=DEFAULT_MIN_PIXELS, gt=0, description="model-frame pixel floor (dataset version)")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0, description="model-frame pixel cap (dataset version)")
    crop_padding: float = Field(default=0.0, ge=0.0, le=1.0, description="zoom crop padding, fraction of the box")
    hub_token: SecretStr | None = Field(default=None, description="with hub_repo_id: releases are pushed to the Hub")
    hub_repo_id: str | None = Field(default=None, description="Hub dataset repo, e.g. org/us-vqa")
    release_c0_share_min: float = Field(default=0.02, ge=0.0, le=1.0, description="release gate: c = 0 share per organ")
    release_c0_share_max: float = Field(default=0.8, ge=0.0, le=1.0, description="release gate: c = 0 share per organ")
    release_label_share_max: float = Field(
        default=0.95, gt=0.0, le=1.0, description="release gate: one label's share of an organ × attribute"
    )
    release_distribution_min_rows: int = Field(
        default=20, ge=1, description="release gate: smaller organ / attribute groups are not judged"
    )
    patient_key_salt: SecretStr | None = Field(
        default=None, description="salt for patient keys; default: a random one kept in the workspace"
    )

    @field_validator("teacher_base_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [u.strip() for u in value.split(",") if u.strip()] if isinstance(value, str) else value

    @field_validator("catalog_url")
    @classmethod
    def _known_driver(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql:// SQLAlchemy URL")
        return url

    @model_validator(mode="after")
    def _store_reachable_by_workers(self) -> Settings:
        if self.task_runner != "local" and self.resolved_image_store_url.startswith("memory://"):
            raise ValueError(
                f"{ENV_PREFIX}IMAGE_STORE_URL is memory://, which lives in one process; the {self.task_runner} "
                "workers need a shared store (a folder, s3://, gs://)"
            )
        return self

    @property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{(self.workspace / 'catalog.sqlite').resolve()}"

    @property
    def resolved_image_store_url(self) -> str:
        return self.image_store_url or str((self.workspace / "images").resolve())

    @property
    def label_studio_files_root(self) -> str:
        """Label Studio's document root: it may not be the storage folder itself, only hold it."""
        return self.label_studio_document_root or str(Path(self.resolved_image_store_url).parent)

    @property
    def label_studio_image_prefix(self) -> str:
        """The image store's path inside the document root, as Local Files URLs spell it."""
        return Path(self.resolved_image_store_url).name

    @property
    def labelstudio_dir(self) -> Path:
        """The local server's data and credentials (embedded default only)."""
        return (self.workspace / "labelstudio").resolve()

    @property
    def salt_file(self) -> Path:
        """Where the workspace keeps its generated patient-key salt (when the setting is not given)."""
        return self.workspace / SALT_FILE_NAME

    def salt(self) -> bytes:
        """The patient-key salt: the setting, or a random one created once per workspace (mode 600).

        An empty or short salt (under MIN_SALT_BYTES), from the setting or the file, raises SettingsError. The
        file is created atomically: processes that start together all end up with the same salt. A workspace
        made before the file was visible keeps its `.patient_key_salt`: it is moved to `patient_key_salt.secret`.

        Back it up: without LOOKCLOSER_PATIENT_KEY_SALT the salt lives only in `workspace/patient_key_salt.secret`.
        Copy that file with the catalog (and keep it as secret as the patient ids it protects). Losing it means
        the same patients get new patient keys, so patient-level splits and de-duplication no longer line up with
        the catalog; the catalog stores a fingerprint of the salt and refuses a different one rather than mix keys.
        """
        if self.patient_key_salt is not None:
            remedy = (
                f"set it to at least {MIN_SALT_BYTES} random bytes (e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`) or to the salt the catalog was keyed "
                f"with, or unset it to use {self.salt_file}"
            )
            return _checked_salt(self.patient_key_salt.get_secret_value().encode(), SALT_SETTING, remedy)
        path = self.salt_file
        if not path.exists():
            self.workspace.mkdir(parents=True, exist_ok=True)
            legacy = self.workspace / LEGACY_SALT_FILE_NAME
            try:
                salt = _read_salt_file(legacy)
            except FileNotFoundError:  # a new workspace (or another process has just moved the legacy file)
                _create_if_absent(path, secrets.token_hex(32).encode())
            else:  # move it atomically: the new name gets the legacy file's salt unless it already has one
                _create_if_absent(path, salt)
                if _read_salt_file(path) == salt:
                    legacy.unlink(missing_ok=True)
        return _read_salt_file(path)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a malformed value raises SettingsError naming the variable."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        if not first["loc"]:  # a rule over several settings names them itself
            raise SettingsError(f"invalid settings: {first['msg'].removeprefix('Value error, ')}") from None
        name = ENV_PREFIX + str(first["loc"][0]).upper()
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from None
