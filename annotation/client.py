"""A thin wrapper over `label-studio-sdk` for what the pipeline does: projects, bulk import, snapshots.

Every call has a timeout. Reads retry with backoff on connection errors and 5xx; imports never
retry inside the SDK (a 5xx after the server committed would duplicate tasks) — they are made
idempotent instead, by looking tasks up by `image_id` first. Errors come out as `LabelStudioError`
with a one-line message that names the URL, never the token.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

log = logging.getLogger(__name__)

T = TypeVar("T")
TIMEOUT_S = 120.0
READ_ATTEMPTS = 5
BACKOFF_S = 1.0
IMPORT_CHUNK = 1000
SNAPSHOT_POLL_S = 0.5
SNAPSHOT_TIMEOUT_S = 600.0


class LabelStudioError(Exception):
    """Label Studio refused or could not be reached; the message is one line."""


class LabelStudioAuthError(LabelStudioError):
    """The token was rejected."""


class LabelStudioUnavailableError(LabelStudioError):
    """The server could not be reached, or kept answering 5xx / 429, through every retry."""


class LabelStudioClient:
    """The pipeline's view of one Label Studio server, authenticated as one account."""

    def __init__(self, url: str, token: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout_s, max_retries=0)

    # ------------------------------------------------------------------ plumbing
    def _call(self, what: str, function: Callable[[], T], *, retry: bool = True) -> T:
        """Run one SDK call; bounded retries with exponential backoff for transient failures."""
        attempts = READ_ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return function()
            except ApiError as err:
                if err.status_code in (401, 403):
                    raise LabelStudioAuthError(f"Label Studio at {self.url} rejected the token ({what})") from None
                transient = err.status_code is not None and (err.status_code >= 500 or err.status_code == 429)
                if not transient or attempt == attempts:
                    error = LabelStudioUnavailableError if transient else LabelStudioError
                    raise error(f"Label Studio at {self.url}: {what} failed (HTTP {err.status_code})") from None
            except (httpx.TransportError, ConnectionError) as err:
                if attempt == attempts:
                    raise LabelStudioUnavailableError(
                        f"Label Studio at {self.url} is unreachable ({what}: {type(err).__name__})"
                    ) from None
            delay = BACKOFF_S * 2 ** (attempt - 1)
            log.warning("label studio: %s failed, retry %d/%d in %.1f s", what, attempt, attempts - 1, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def whoami(self) -> dict[str, Any]:
        """The account behind the token (checks the URL and the token)."""
        user = self._call("whoami", self._sdk.users.whoami)
        return {"id": user.id, "email": user.email}

    # ------------------------------------------------------------------ projects and storage
    def ensure_project(self, title: str, label_config: str, *, description: str = "") -> int:
        """The id of the project with this title, created (or its config updated) as needed."""
        existing = [p for p in self._call("list projects", lambda: list(self._sdk.projects.list())) if p.title == title]
        if existing:
            project = existing[0]
            if project.label_config != label_config:
                self._call("update project", lambda: self._sdk.projects.update(project.id, label_config=label_config))
            return int(project.id)
        created = self._call(
            "create project",
            lambda: self._sdk.projects.create(title=title, label_config=label_config, description=description),
            retry=False,
        )
        return int(created.id)

    def ensure_local_storage(self, project_id: int, path: str) -> None:
        """A (never synced) Local Files storage: the grant that lets the project show files under `path`."""
        storages = self._call("list storages", lambda: list(self._sdk.import_storage.local.list(project=project_id)))
        if not any(getattr(s, "path", None) == path for s in storages):
            self._call(
                "create storage",
                lambda: self._sdk.import_storage.local.create(project=project_id, path=path, title="image store"),
                retry=False,
            )

    # ------------------------------------------------------------------ tasks
    def export_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations and predictions, through one export snapshot."""

        def snapshot() -> list[dict[str, Any]]:
            export = self._sdk.projects.exports.create(project_id, title="lookcloser pull")
            deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
            while export.status not in ("completed", "failed") and time.monotonic() < deadline:
                time.sleep(SNAPSHOT_POLL_S)
                export = self._sdk.projects.exports.get(project_id, export_pk=export.id)
            if export.status != "completed":
                raise ApiError(status_code=500, body="export snapshot did not complete")
            raw = b"".join(self._sdk.projects.exports.download(project_id, export_pk=export.id, export_type="JSON"))
            return json.loads(raw)

        return self._call("export snapshot", snapshot)

    def task_ids_by_image(self, project_id: int) -> dict[str, int]:
        """image_id → task id of the tasks already in the project (what makes import idempotent)."""
        return {t["data"]["image_id"]: int(t["id"]) for t in self.export_tasks(project_id) if "image_id" in t["data"]}

    def import_tasks(self, project_id: int, tasks: Iterable[dict[str, Any]]) -> int:
        """Bulk-import tasks (with their predictions) in chunks; no SDK retry. Returns how many."""
        count = 0
        for chunk in _chunks(list(tasks), IMPORT_CHUNK):
            response = self._call(
                "import tasks",
                lambda chunk=chunk: self._sdk.projects.import_tasks(project_id, request=chunk, return_task_ids=True),
                retry=False,
            )
            count += int(response.task_count or len(chunk))
        return count

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], *, lead_time: float | None = None) -> int:
        """Post one annotation as this account (a simulated reader)."""
        created = self._call(
            "create annotation",
            lambda: self._sdk.annotations.create(id=task_id, result=result, lead_time=lead_time),
            retry=False,
        )
        return int(created.id)

    def users(self) -> dict[int, str]:
        """user id → e-mail, to map `completed_by` to configured pseudonyms (never stored)."""
        return {int(u.id): str(u.email).lower() for u in self._call("list users", lambda: list(self._sdk.users.list()))}


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
