"""What every command shares: the console, settings, the one-line misconfiguration error, parameter
validation, Label Studio and Prefect preparation, the catalog for read-only commands."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from flows.runtime.settings import ENV_PREFIX, Settings, load_settings

console = Console()
log = logging.getLogger("lookcloser")

EXIT_ERROR, EXIT_CONFIG = 1, 2


class ConfigError(Exception):
    """Misconfiguration or an unreachable service: exit code 2 with this one-line message."""


def settings() -> Settings:
    return load_settings()


def require_reachable_cluster(settings: Settings) -> None:
    """A cluster address nobody answers at is a configuration error, said in one line before the flow runs."""
    from flows.runtime.task_runners import unreachable_cluster

    problem = unreachable_cluster(settings)
    if problem:
        raise ConfigError(problem)


def catalog_status(settings: Settings) -> dict[str, Any]:
    """The `status` object; a catalog that cannot be opened is a configuration error, said in one line."""
    from sqlalchemy.exc import OperationalError

    from flows.catalog import masked_url, open_catalog

    try:
        with open_catalog(settings) as catalog:
            return catalog.status()
    except OperationalError:
        raise ConfigError(
            f"cannot open the catalog at {masked_url(settings.resolved_catalog_url)} ({ENV_PREFIX}CATALOG_URL)"
        ) from None


def masked(url: str) -> str:
    from flows.catalog import masked_url

    return masked_url(url) if "://" in url else url


def default(model: type[BaseModel], field: str) -> Any:
    """A parameter model's default for one field: the CLI's help shows it (one number, kept in the model)."""
    return model.model_fields[field].get_default(call_default_factory=True)


def params(params_class: type, /, **values: Any) -> Any:
    """A flow's parameter model from CLI values; a bad value is a one-line misconfiguration."""
    from pydantic import ValidationError

    try:
        return params_class(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        where = f"--{str(first['loc'][0]).replace('_', '-')}" if first["loc"] else "options"
        raise ConfigError(f"invalid {where}: {first['msg']}") from None


def check_labelstudio_access() -> None:
    """Token, reader accounts and server answer, checked before any flow starts (one-line errors)."""
    from annotation.access import admin_client, load_assignment

    current = settings()
    run_stage(lambda: (admin_client(current).whoami(), load_assignment(current)))


def run_stage(run: Callable[[], Any]) -> Any:
    """Run a Label Studio stage flow; a missing token, a rejected token or a down server exit with code 2."""
    from annotation.access import LabelStudioNotConfiguredError
    from annotation.client import LabelStudioAuthError, LabelStudioError

    try:
        return run()
    except LabelStudioAuthError as err:
        raise ConfigError(f"{err}; check {ENV_PREFIX}LABEL_STUDIO_TOKEN") from None
    except (LabelStudioError, LabelStudioNotConfiguredError) as err:
        raise ConfigError(str(err)) from None


def prepare_prefect() -> None:  # before the first import of prefect
    from flows.runtime.prefect_env import configure_prefect_environment

    configure_prefect_environment(settings().workspace)
