"""One `Settings` for URLs, paths and secrets (environment variables `LOOKCLOSER_*` or `.env`).

Secrets are `SecretStr`: printing or logging a `Settings` shows `**********`. Run choices (counts,
organs, thresholds) are flow parameters, not settings; training hyper-parameters live in recipes.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.environment import ENV_PREFIX
from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "load_settings"]


class SettingsError(Exception):
    """Misconfiguration, with a one-line message naming the variable."""


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

    def salt(self) -> bytes:
        """The patient-key salt: the setting, or a random one created once per workspace (mode 600)."""
        if self.patient_key_salt is not None:
            return self.patient_key_salt.get_secret_value().encode()
        path = self.workspace / ".patient_key_salt"
        if not path.exists():
            self.workspace.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(32))
        return path.read_text().strip().encode()


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
