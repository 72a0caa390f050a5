"""Ingest throughput and memory, from one run on the same files.

    .venv/bin/python bench/ingest.py throughput [--count 300]
    .venv/bin/python bench/ingest.py memory [--small 2000] [--large 20000] [--width 320 --height 240]

throughput: phantom PNGs (full frames as a hospital export has them: header band, no region) and the
burned-in text corpus (`flows.ingest.sources.phantom_burned_in`, PNG and JPEG) are written once (not
timed); then a bare loop that only decodes and PNG-encodes each file is timed against `register_items`
over the same files (folder adapter, fresh SQLite catalog and image store), twice: with the `crop_only`
policy (scan area found from the pixels, no OCR; target ≥ 0.6) and with the default `mask` policy
(OCR text detection on every image, recognition and masking where it finds text; target ≥ 0.3).
Prints each ratio ingest / bare and the OCR's share of the redacting run.

memory: ingests `small` and then `large` phantom files, each in a fresh child process, and prints
the peak RSS of each and their ratio (target ≤ 1.3: memory must not grow with the data set).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from flows.ingest.sources.phantom import PhantomConfig, iter_cases

THROUGHPUT_TARGET = 0.6  # crop only: no OCR
REDACTION_TARGET = 0.3  # with burned-in text detection and masking
MEMORY_TARGET = 1.3


def write_phantom_files(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """Phantom images as plain PNG files (only the image, as a hospital export would have)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = PhantomConfig(width=width, height=height, organs=("breast",))
    paths = []
    for case in iter_cases(seed=7, count=count, config=config):
        path = folder / f"img{case.index:06d}.png"
        if not path.exists():
            Image.fromarray(case.image).save(path, compress_level=1)
        paths.append(path)
    return paths


def bare_loop(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.load()
            image.save(io.BytesIO(), format="PNG", compress_level=3)
    return time.perf_counter() - start


def ingest_folder(folder: Path, work: Path, policy: str = "mask") -> tuple[float, dict]:
    from flows.catalog import Catalog
    from flows.ingest.core import IngestOptions, register_items
    from flows.ingest.image_store import ImageStore
    from flows.ingest.sources.folder import iter_folder_items

    catalog = Catalog(f"sqlite:///{work / 'catalog.sqlite'}")
    store = ImageStore(str(work / "images"))
    start = time.perf_counter()
    summary = register_items(
        iter_folder_items(folder, organ="breast", layout="plain"),
        catalog,
        store,
        b"bench-salt-0123456789",
        IngestOptions(burned_in_text=policy),
    )
    elapsed = time.perf_counter() - start
    catalog.close()
    return elapsed, {"seen": summary.seen, "out": summary.out, "quarantined": summary.quarantined}


def write_corpus_files(folder: Path, count: int) -> list[Path]:
    from flows.ingest.sources.phantom_burned_in import write_corpus

    if not folder.exists():
        write_corpus(folder, seed=7, count=count, formats=("png", "jpeg"))
    return sorted(p for p in folder.iterdir() if p.is_file())


def measure(label: str, folder: Path, paths: list[Path], work_root: Path) -> None:
    from flows.ingest.deid.ocr import text_reader

    text_reader()  # the model sessions are built once per process, not per run: not timed
    bare = bare_loop(paths)
    print(f"{label}: {len(paths)} files; bare decode + PNG encode {bare:.2f} s ({len(paths) / bare:.1f} img/s)")
    for policy, target in (("crop_only", THROUGHPUT_TARGET), ("mask", REDACTION_TARGET)):
        work = work_root / f"{label}-{policy}"
        work.mkdir(parents=True)
        ocr_before = text_reader().seconds
        elapsed, summary = ingest_folder(folder, work, policy)
        ocr = text_reader().seconds - ocr_before
        ratio = bare / elapsed
        print(
            f"  {policy:<9} register_items {elapsed:.2f} s ({len(paths) / elapsed:.1f} img/s), out {summary['out']}, "
            f"quarantined {summary['quarantined'] or '{}'}; OCR {ocr:.2f} s = {ocr / elapsed:.0%} of the run; "
            f"ratio ingest / bare {ratio:.2f} (target >= {target}: {'met' if ratio >= target else 'MISSED'})"
        )


def throughput(count: int, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        phantom = write_phantom_files(root / "phantom", count, width, height)
        corpus = write_corpus_files(root / "corpus", count)
        measure(f"phantom-{width}x{height}", root / "phantom", phantom, root / "work")
        measure("burned-in-corpus", root / "corpus", corpus, root / "work")


def _child(folder: str, work: str) -> None:
    elapsed, summary = ingest_folder(Path(folder), Path(work))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"elapsed": elapsed, "peak_mib": peak_kib / 1024, **summary}))


def memory(small: int, large: int, width: int, height: int, keep: Path | None) -> None:
    root = keep or Path(tempfile.mkdtemp(prefix="lookcloser-bench-"))
    results = {}
    for count in (small, large):
        files = root / f"files-{count}"
        write_phantom_files(files, count, width, height)
        with tempfile.TemporaryDirectory() as work:
            out = subprocess.run(
                [sys.executable, __file__, "_child", str(files), work], capture_output=True, text=True, check=True
            )
        results[count] = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{count:>6} images: peak RSS {results[count]['peak_mib']:.0f} MiB, "
            f"{results[count]['elapsed']:.1f} s, out {results[count]['out']}"
        )
    ratio = results[large]["peak_mib"] / results[small]["peak_mib"]
    print(
        f"peak RSS ratio {large}/{small}: {ratio:.2f} (target <= {MEMORY_TARGET}: "
        f"{'met' if ratio <= MEMORY_TARGET else 'MISSED'})"
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_child":
        _child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["throughput", "memory"])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--keep", type=Path, default=None, help="keep generated files here (reused next time)")
    args = parser.parse_args()
    if args.mode == "throughput":
        throughput(args.count, args.width, args.height)
    else:
        memory(args.small, args.large, args.width, args.height, args.keep)


if __name__ == "__main__":
    main()
