"""`lookcloser doctor`: which settings are missing and which services answer."""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Literal

from flows.catalog import masked_url
from flows.runtime.settings import ENV_PREFIX, Settings

PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    state: Literal["ok", "warn", "fail"]
    detail: str


def _http_ok(url: str, token: str | None = None) -> tuple[bool, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            return 200 <= response.status < 300, f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        return False, f"unreachable ({getattr(err, 'reason', err)})"


def check_catalog(settings: Settings) -> Check:
    from sqlalchemy.exc import SQLAlchemyError

    from flows.catalog import open_catalog

    url = settings.resolved_catalog_url
    try:
        with open_catalog(settings, migrate=False) as catalog:
            revision, head = catalog.revision(), catalog.head_revision()
    except SQLAlchemyError as err:
        return Check("catalog", "fail", f"{masked_url(url)}: {type(err).__name__} ({ENV_PREFIX}CATALOG_URL)")
    if revision == head:
        return Check("catalog", "ok", f"{masked_url(url)} at revision {revision}")
    return Check("catalog", "warn", f"{masked_url(url)} at revision {revision}, head {head}: upgrades on next run")


def check_image_store(settings: Settings) -> Check:
    from flows.ingest.image_store import ImageStore

    try:
        store = ImageStore(settings.resolved_image_store_url)
        probe = f"{store.root.rstrip('/')}/.doctor-probe"
        store.fs.pipe(probe, b"ok")
        store.fs.rm(probe)
    except OSError as err:
        return Check("image store", "fail", f"{settings.resolved_image_store_url}: not writable ({err.strerror})")
    return Check("image store", "ok", f"{settings.resolved_image_store_url} writable")


def check_label_studio(settings: Settings) -> Check:
    url = str(settings.label_studio_url).rstrip("/")
    ok, detail = _http_ok(f"{url}/health")
    token = "set" if settings.label_studio_token else f"not set ({ENV_PREFIX}LABEL_STUDIO_TOKEN)"
    return Check("label studio", "ok" if ok else "warn", f"{url}: {detail}; token {token}")


def check_teacher(settings: Settings) -> list[Check]:
    """Each replica answers `/models` (with the key) and serves the configured model."""
    if not settings.teacher_base_urls:
        return [Check("teacher", "warn", f"no endpoint ({ENV_PREFIX}TEACHER_BASE_URLS): template backend only")]
    key = settings.teacher_api_key.get_secret_value() if settings.teacher_api_key else None
    checks = []
    for base in settings.teacher_base_urls:
        url = str(base).rstrip("/")
        request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
                served = [str(m.get("id")) for m in json.load(response).get("data", [])]
        except urllib.error.HTTPError as err:
            hint = f" (check {ENV_PREFIX}TEACHER_API_KEY)" if err.code in (401, 403) else ""
            checks.append(Check("teacher", "fail", f"{url}: HTTP {err.code}{hint}"))
            continue
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
            checks.append(Check("teacher", "warn", f"{url}: unreachable ({getattr(err, 'reason', err)})"))
            continue
        if settings.teacher_model in served:
            checks.append(Check("teacher", "ok", f"{url}: serves {settings.teacher_model}"))
        else:
            checks.append(
                Check(
                    "teacher",
                    "fail",
                    f"{url}: serves {', '.join(served) or 'no model'}, not {settings.teacher_model} "
                    f"({ENV_PREFIX}TEACHER_MODEL)",
                )
            )
    return checks


def check_optional(settings: Settings) -> list[Check]:
    hub = "set" if settings.hub_token else f"not set ({ENV_PREFIX}HUB_TOKEN): releases stay local"
    training = importlib.util.find_spec("trl") is not None
    return [
        Check("hub token", "ok" if settings.hub_token else "warn", hub),
        Check(
            "training extra",
            "ok" if training else "warn",
            "installed" if training else "not in this environment (training runs as a job in its own)",
        ),
    ]


def check_task_runner(settings: Settings) -> Check:
    from flows.runtime.task_runners import cluster_address, unreachable_cluster

    problem = unreachable_cluster(settings)
    if problem:
        return Check("task runner", "fail", problem)
    joined = cluster_address(settings)
    where = f"the cluster at {joined[0]}" if joined else f"{settings.workers} local workers"
    detail = "threads of the flow's process" if settings.task_runner == "local" else where
    return Check("task runner", "ok", f"{settings.task_runner}: {detail}")


def run_checks(settings: Settings) -> list[Check]:
    return [
        check_catalog(settings),
        check_image_store(settings),
        check_task_runner(settings),
        check_label_studio(settings),
        *check_teacher(settings),
        *check_optional(settings),
    ]
