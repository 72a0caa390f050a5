"""Publishing throughput and memory: a whole release against writing the same rows with plain pyarrow.

    .venv/bin/python bench/release.py [--rows 20000] [--size 512] [--workspace DIR] [--rounds 1]

Set-up (not timed, kept in the workspace and reused by the next run): phantom images of SIZE×SIZE,
one consensus record per lesion attribute (about 4.6 per image) until ROWS records, template
rationales. Then, each in its own process so its peak RSS is its own, alternating `--rounds` times:

1. pyarrow: the same rows (`iter_rows`: catalog reads, decode, model frame, crop, PNG encoding; the
   work any writer of these rows must do) written with a plain `pyarrow.parquet.ParquetWriter` into one
   file, 100 rows per row group, schema inferred by pyarrow;
2. publish: `publish_release` into a fresh release folder: the same rows, `datasets` features, shards
   per organ and split, the row facts and the Great Expectations gate with Data Docs, the card and its
   plots, the git commit and tag.

Prints each run's seconds and peak RSS, then publish / pyarrow time (target <= 1.5) and the publish
peak RSS (target < 2 GB). The machine is shared and noisy: the ratio is measured in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS_PER_IMAGE = 4.6  # phantom lesions: breast 6, liver 3, thyroid 5 attributes
NAME = "bench-release"


def _environment(workspace: Path) -> None:
    os.environ["LOOKCLOSER_WORKSPACE"] = str(workspace)


def _frames() -> object:
    from flows.runtime.settings import load_settings
    from flows.stages.publish import frame_settings

    return frame_settings(load_settings())


def set_up(workspace: Path, rows: int, size: int) -> int:
    """Phantom consensus and template rationales for at least `rows` records; reused when already there."""
    from flows.catalog import Catalog
    from flows.ingest.image_store import ImageStore
    from flows.ingest.sources.phantom import PhantomConfig
    from flows.runtime.settings import load_settings
    from flows.stages.synthesize import SynthesizeParams, run_synthesis

    _environment(workspace)
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    try:
        have = len(catalog.consensus_records())
        if have < rows:
            from tests.teacher_fixtures import phantom_consensus

            count = math.ceil(rows / ROWS_PER_IMAGE)
            print(f"set-up: {count} phantom images of {size}×{size} (not timed; reused next time)", flush=True)
            store = ImageStore(settings.resolved_image_store_url)
            config = PhantomConfig(width=size, height=size)
            phantom_consensus(catalog, store, workspace / "src", count=count, config=config)
        run_synthesis(SynthesizeParams(progress=True), settings)
        return len(catalog.consensus_records())
    finally:
        catalog.close()


def child_pyarrow(workspace: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flows.catalog import Catalog
    from flows.ingest.image_store import ImageStore
    from flows.release.rows import iter_rows
    from flows.runtime.settings import load_settings

    _environment(workspace)
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    out = workspace / "plain.parquet"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    writer, buffer, rows = None, [], 0

    def flush() -> None:
        nonlocal writer, buffer
        table = pa.Table.from_pylist(buffer, schema=writer.schema if writer else None)
        writer = writer or pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
        buffer = []

    for outcome in iter_rows(catalog, ImageStore(settings.resolved_image_store_url), _frames()):
        if outcome.sample is None:
            continue
        row = outcome.sample.model_dump(mode="python")
        row["reader_labels"] = [{"reader": r, "label": v} for r, v in sorted(row["reader_labels"].items())]
        buffer.append(row)
        rows += 1
        if len(buffer) >= 100:
            flush()
    if buffer:
        flush()
    writer.close()
    seconds = time.perf_counter() - start
    catalog.close()
    return {"rows": rows, "seconds": seconds, "bytes": out.stat().st_size}


def child_publish(workspace: Path) -> dict:
    from flows.catalog import Catalog
    from flows.ingest.image_store import ImageStore
    from flows.release.publish import publish_release
    from flows.runtime.settings import load_settings

    _environment(workspace)
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    folder = workspace / "releases" / NAME
    shutil.rmtree(workspace / "releases", ignore_errors=True)
    start = time.perf_counter()
    summary = publish_release(
        catalog,
        ImageStore(settings.resolved_image_store_url),
        folder,
        NAME,
        _frames(),
        docs_dir=workspace / "releases" / f"{NAME}.data-docs",
    )
    seconds = time.perf_counter() - start
    catalog.close()
    size = sum(p.stat().st_size for p in folder.glob("data/*/*.parquet"))
    return {"rows": summary.rows, "seconds": seconds, "bytes": size, "version": summary.version}


def run_child(kind: str, workspace: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--workspace", str(workspace)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/lookcloser-bench-release"))
    parser.add_argument("--child", choices=["pyarrow", "publish"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    if args.child:
        facts = child_pyarrow(workspace) if args.child == "pyarrow" else child_publish(workspace)
        facts["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(facts))
        return
    workspace.mkdir(parents=True, exist_ok=True)
    records = set_up(workspace, args.rows, args.size)
    print(f"{records} consensus records with rationales; {os.cpu_count()} CPUs", flush=True)
    runs: dict[str, list[dict]] = {"pyarrow": [], "publish": []}
    for round_ in range(args.rounds):
        for kind in ("pyarrow", "publish"):
            facts = run_child(kind, workspace)
            runs[kind].append(facts)
            print(
                f"round {round_ + 1} {kind:8s} {facts['rows']} rows in {facts['seconds']:7.1f} s "
                f"({facts['rows'] / facts['seconds']:6.1f} rows/s), peak RSS {facts['peak_rss_mb']:6.0f} MB, "
                f"{facts['bytes'] / 2**20:7.0f} MB written",
                flush=True,
            )
    plain = statistics.median(f["seconds"] for f in runs["pyarrow"])
    ours = statistics.median(f["seconds"] for f in runs["publish"])
    rss = max(f["peak_rss_mb"] for f in runs["publish"])
    print(f"publish / plain pyarrow time: {ours / plain:.2f} (target <= 1.5)")
    print(f"publish peak RSS: {rss:.0f} MB (target < 2048 MB)")


if __name__ == "__main__":
    main()
