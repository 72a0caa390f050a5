"""Where a flow's tasks run, chosen by a setting when the flow starts (not when its module is imported).

`LOOKCLOSER_TASK_RUNNER=local` (default) runs tasks in threads of the flow's process. `dask` and
`ray` run them on a cluster: the one at `LOOKCLOSER_DASK_ADDRESS` / `LOOKCLOSER_RAY_ADDRESS`, or a
local one of `LOOKCLOSER_WORKERS` processes started for the run. Workers read the same settings
(catalog, image store, salt) from their own environment, so nothing secret travels with a task.

Prefect copies a flow's task runner with `duplicate()` at the start of every run; `ConfiguredTaskRunner`
answers that call with the runner the settings ask for, so deployments, the CLI and tests all select
the engine the same way.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.runtime.settings import ENV_PREFIX, Settings, load_settings

T = TypeVar("T")
R = TypeVar("R")
RESUBMISSIONS = 3  # a batch whose worker died is sent again (the work is idempotent)


def build_task_runner(settings: Settings) -> TaskRunner[Any]:
    """The task runner the settings ask for (imported only when used: Ray is heavy)."""
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,  # no web UI on a shared machine; bind nothing but the scheduler
                "host": "127.0.0.1",
            }
        )
    if settings.task_runner == "ray":
        from prefect_ray import RayTaskRunner

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave the machine
        if settings.ray_address:
            return RayTaskRunner(address=settings.ray_address)
        # a local Ray binds its services to 127.0.0.1 only, without the dashboard
        init = {"include_dashboard": False, "num_cpus": settings.workers, "_node_ip_address": "127.0.0.1"}
        return RayTaskRunner(init_kwargs=init)
    return ThreadPoolTaskRunner()


class ConfiguredTaskRunner(ThreadPoolTaskRunner):
    """A flow's task runner placeholder: each run gets the runner its settings name."""

    def duplicate(self) -> TaskRunner[Any]:  # type: ignore[override]
        return build_task_runner(load_settings())


def is_distributed(settings: Settings) -> bool:
    return settings.task_runner != "local"


def cluster_address(settings: Settings) -> tuple[str, str] | None:
    """(setting name, address) of the existing cluster the settings join; None for a local one."""
    if settings.task_runner == "dask" and settings.dask_address:
        return "DASK_ADDRESS", settings.dask_address
    if settings.task_runner == "ray" and settings.ray_address and settings.ray_address != "auto":
        return "RAY_ADDRESS", settings.ray_address
    return None


def unreachable_cluster(settings: Settings, *, timeout_s: float = 3.0) -> str | None:
    """Why the configured cluster cannot be reached (one line), or None when it answers or none is set.

    Checked before a flow run starts: inside the run, Prefect would report the failed connection as a
    crashed flow with the client library's traceback.
    """
    configured = cluster_address(settings)
    if configured is None:
        return None
    name, address = configured
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        return (
            f"{ENV_PREFIX}{name}: expected scheme://host:port"  # the value itself is not echoed: it may hold a password
        )
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        return f"cannot reach the {settings.task_runner} cluster at {host}:{port} ({ENV_PREFIX}{name}): {reason}"


def in_order(submit: Callable[[T], Any], jobs: Iterable[T], *, window: int) -> Iterator[R]:
    """Submit jobs (Prefect `task.submit`), at most `window` in flight; yield their results in job order.

    A job whose future fails because its worker died (or for any other reason) is submitted again, up
    to RESUBMISSIONS times: the caller's jobs are idempotent, so a retry repeats nothing visible. An
    error marked `permanent` (a misconfigured worker) is raised at once.
    """
    pending: deque[tuple[T, Any]] = deque()

    def result(job: T, future: Any) -> R:
        for attempt in range(RESUBMISSIONS + 1):
            try:
                return future.result()
            except Exception as err:
                if attempt == RESUBMISSIONS or getattr(err, "permanent", False):
                    raise
                future = submit(job)
        raise AssertionError("unreachable")

    for job in jobs:
        pending.append((job, submit(job)))
        if len(pending) >= window:
            yield result(*pending.popleft())
    while pending:
        yield result(*pending.popleft())
