"""Environment that keeps Prefect offline and its ephemeral API reliable on small machines.

Must run before `prefect` is imported. Values already set by the operator win.
"""

from __future__ import annotations

import os
from pathlib import Path

PREFECT_DEFAULTS = {
    "DO_NOT_TRACK": "1",  # no SDK telemetry
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no server heartbeat to the vendor
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # the default 20 s fails on 2 cores
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_SERVER_API_HOST": "127.0.0.1",  # a server started here (ephemeral or `prefect server start`): loopback
    # Prefect 3's default, named: no task or flow result is written to result storage unless a task asks for
    # it (results may hold what a run saw; ingest's never ask, see flows.stages.ingest)
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
}


def configure_prefect_environment(workspace: Path) -> None:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # the embedded default keeps Prefect's database inside the workspace, like everything else
    os.environ.setdefault("PREFECT_HOME", str((workspace / ".prefect").resolve()))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
