"""Cost curves: time and peak memory per item of ingest, consensus, synthesis and publish, by collection size.

    .venv/bin/python bench/costs.py [--sizes 1000,10000] [--size 256] [--root DIR] [--plot PNG]
    .venv/bin/python bench/costs.py --sizes 1000,10000,100000      # the 100k point: hours, opt-in

For each size N (phantom images), in a workspace of its own under ROOT (kept and reused: a second run
re-times the stages on the same data):

- set-up, not timed: N phantom cases of SIZE×SIZE written to disk, and later two simulated readers'
  readings (what the pull would store);
- ingest (N images): the phantom adapter reading the cases back, `register_items` into the catalog;
- consensus (N × attributes decisions): `decide_organ` for every organ;
- synthesis (one item per consensus record): `run_synthesis` against a scripted OpenAI-compatible
  teacher in its own process (answers at once: what is measured is the pipeline, not a model);
- publish (one item per release row): `publish_release` (rows, shards, the gate, the card, the tag).

Each stage runs in a fresh process so its peak RSS is its own; its fixed costs (imports, catalog
connection, starting the teacher) are paid before the clock starts. Printed per stage and size: items,
seconds, milliseconds per item, peak RSS and its growth over the process's RSS before the stage, per
item. Then, per stage, the largest size's cost per item over the smallest's: flat cost is a ratio
near 1. The machine is shared and noisy: all sizes are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("ingest", "consensus", "synthesis", "publish")
RELEASE = "bench-costs"


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _settings(workspace: Path) -> object:
    os.environ["LOOKCLOSER_WORKSPACE"] = str(workspace)
    os.environ["LOOKCLOSER_PATIENT_KEY_SALT"] = "bench salt, 16 bytes or more"
    from flows.runtime.settings import load_settings

    return load_settings()


# ---------------------------------------------------------------------------------------------- set-up
def write_cases(workspace: Path, count: int, size: int) -> None:
    """The phantom cases on disk (the adapter writes each once; a later pass reads them back)."""
    from flows.ingest.sources.phantom import PhantomConfig, phantom_items

    config = PhantomConfig(width=size, height=size)
    for _ in phantom_items(workspace / "sources", seed=1, count=count, config=config):
        pass


def write_readings(workspace: Path) -> None:
    from flows.catalog import Catalog
    from tests.reader_fixtures import simulated_readings

    settings = _settings(workspace)
    catalog = Catalog(settings.resolved_catalog_url)
    if not catalog.stage_item_keys("pull"):
        readings = simulated_readings(catalog)
        catalog.save_pulled(readings, [(f"sim:{k}", "out", None, None) for k in range(len(readings))])
    catalog.close()


# ---------------------------------------------------------------------------------------------- stages
# Each stage function does its fixed costs (imports, catalog connection, server start) and returns the
# work to time, which returns how many items it handled.
Work = Callable[[], int]


def stage_ingest(workspace: Path, count: int, size: int) -> Work:
    from flows.catalog import Catalog
    from flows.ingest.core import IngestOptions, register_items
    from flows.ingest.image_store import ImageStore
    from flows.ingest.sources.phantom import PhantomConfig, phantom_items

    settings = _settings(workspace)
    catalog = Catalog(settings.resolved_catalog_url)
    store = ImageStore(settings.resolved_image_store_url)

    def work() -> int:
        items = phantom_items(workspace / "sources", seed=1, count=count, config=PhantomConfig(width=size, height=size))
        return register_items(items, catalog, store, settings.salt(), IngestOptions()).out

    return work


def stage_consensus(workspace: Path, _count: int, _size: int) -> Work:
    from annotation.consensus import ConsensusPolicy
    from flows.catalog import Catalog
    from flows.stages.consensus import decide_organ
    from schemas.vocabulary import registered_organs

    catalog = Catalog(_settings(workspace).resolved_catalog_url)
    return lambda: sum(decide_organ(catalog, organ, ConsensusPolicy()).decided for organ in registered_organs())


def stage_synthesis(workspace: Path, _count: int, _size: int) -> Work:
    import atexit

    from bench.teacher import start_server
    from flows.stages.synthesize import SynthesizeParams, run_synthesis

    server, base_url = start_server(_settings(workspace).resolved_catalog_url, 0.0)
    atexit.register(server.kill)
    os.environ["LOOKCLOSER_TEACHER_BASE_URLS"] = base_url
    os.environ["LOOKCLOSER_TEACHER_MODEL"] = "scripted"
    params = SynthesizeParams(backend="openai", candidates=1, progress=False)
    settings = _settings(workspace)
    return lambda: run_synthesis(params, settings).requested


def stage_publish(workspace: Path, _count: int, _size: int) -> Work:
    import great_expectations  # noqa: F401  (a fixed cost of several seconds: not per item)
    import matplotlib.pyplot  # noqa: F401

    from flows.catalog import Catalog
    from flows.ingest.image_store import ImageStore
    from flows.release.publish import publish_release
    from flows.stages.publish import frame_settings

    settings = _settings(workspace)
    catalog = Catalog(settings.resolved_catalog_url)
    shutil.rmtree(workspace / "releases", ignore_errors=True)

    def work() -> int:
        summary = publish_release(
            catalog,
            ImageStore(settings.resolved_image_store_url),
            workspace / "releases" / RELEASE,
            RELEASE,
            frame_settings(settings),
            docs_dir=workspace / "releases" / f"{RELEASE}.data-docs",
        )
        return summary.rows

    return work


def forget_stage(workspace: Path, stage: str) -> None:
    """Undo a stage's output so a re-run of the benchmark times the same work again."""
    from sqlalchemy import delete

    from flows.catalog import Catalog
    from flows.catalog.tables import (
        ConsensusDecisionRow,
        ConsensusRow,
        DiversityMarkRow,
        RationaleRow,
        StageItemRow,
        TeacherCacheRow,
    )

    settings = _settings(workspace)
    catalog = Catalog(settings.resolved_catalog_url)
    tables = {
        "consensus": (ConsensusDecisionRow, ConsensusRow),
        "synthesis": (RationaleRow, TeacherCacheRow, DiversityMarkRow),
    }.get(stage, ())
    with catalog.engine.begin() as conn:
        for table in tables:
            conn.execute(delete(table))
        ledger = {"consensus": "consensus", "synthesis": "synthesize"}.get(stage)
        if ledger:
            conn.execute(delete(StageItemRow).where(StageItemRow.stage == ledger))
    catalog.close()


def child(stage: str, workspace: Path, count: int, size: int) -> None:
    work = globals()[f"stage_{stage}"](workspace, count, size)
    before = _rss_mb()
    start = time.perf_counter()
    items = work()
    seconds = time.perf_counter() - start
    print(json.dumps({"items": items, "seconds": seconds, "peak_mb": _peak_mb(), "before_mb": before}))


def run_child(stage: str, workspace: Path, count: int, size: int) -> dict:
    command = [sys.executable, __file__, "--child", stage, "--workspace", str(workspace)]
    command += ["--count", str(count), "--size", str(size)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{stage} at {count} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report
def plot(results: dict[int, dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in STAGES:
        per_item = [1000 * results[n][stage]["seconds"] / max(1, results[n][stage]["items"]) for n in sizes]
        peak = [results[n][stage]["peak_mb"] for n in sizes]
        left.plot(sizes, per_item, marker="o", label=stage)
        right.plot(sizes, peak, marker="o", label=stage)
    for axis, title, unit in ((left, "time per item", "ms / item"), (right, "peak memory", "peak RSS (MB)")):
        axis.set_xscale("log")
        axis.set_xlabel("phantom images in the collection")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    left.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated numbers of phantom images")
    parser.add_argument("--size", type=int, default=256, help="phantom image side in pixels")
    parser.add_argument("--root", type=Path, default=REPO / "workspace" / "bench-costs")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "benchmarks-costs.png")
    parser.add_argument("--child", choices=STAGES)
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workspace, args.count, args.size)
        return

    sizes = sorted(int(n) for n in args.sizes.split(","))
    results: dict[int, dict[str, dict]] = {}
    header = f"{'stage':<10} {'images':>7} {'items':>7} {'seconds':>8} {'ms/item':>8} {'peak MB':>8} {'KB/item':>8}"
    print(f"phantom images {args.size}×{args.size}; python {sys.version.split()[0]}; {os.cpu_count()} cores")
    for count in sizes:
        workspace = args.root / f"n{count}"
        if workspace.exists():  # ingest is timed on an empty catalog and store; the cases are kept
            for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
                (workspace / name).unlink(missing_ok=True)
            shutil.rmtree(workspace / "images", ignore_errors=True)
        print(f"set-up: {count} phantom cases (not timed)", flush=True)
        write_cases(workspace, count, args.size)
        results[count] = {}
        for stage in STAGES:
            if stage == "consensus":
                write_readings(workspace)
            forget_stage(workspace, stage)
            results[count][stage] = measured = run_child(stage, workspace, count, args.size)
            print(header if stage == "ingest" else "", end="\n" if stage == "ingest" else "")
            ms = 1000 * measured["seconds"] / max(1, measured["items"])
            kb = 1024 * (measured["peak_mb"] - measured["before_mb"]) / max(1, measured["items"])
            print(
                f"{stage:<10} {count:>7} {measured['items']:>7} {measured['seconds']:>8.1f} {ms:>8.2f} "
                f"{measured['peak_mb']:>8.0f} {kb:>8.2f}",
                flush=True,
            )
    smallest, largest = sizes[0], sizes[-1]
    print(f"\ncost per item, {largest} / {smallest} images (flat = 1.0):")
    for stage in STAGES:
        a, b = results[smallest][stage], results[largest][stage]
        ratio = (b["seconds"] / max(1, b["items"])) / (a["seconds"] / max(1, a["items"]))
        memory = b["peak_mb"] / a["peak_mb"]
        print(f"  {stage:<10} time per item × {ratio:.2f}   peak RSS × {memory:.2f}")
    (args.root / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
