"""Phantom generation speed: 100 images (with masks and manifest entries) against a same-run baseline.

    .venv/bin/python bench/phantom.py [--count 100] [--repeats 3]

The baseline is the unavoidable part of the job measured in the same process: drawing speckle noise
of the same size and PNG-encoding it once per image. The target of the foundation issue is
100 images in under 10 s on this 2-core machine; the script prints both the ratio and the seconds.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from flows.ingest.sources.phantom import PhantomConfig, iter_cases, write_case

TARGET_SECONDS_PER_100 = 10.0


def baseline(count: int, config: PhantomConfig) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(count):
        noise = rng.rayleigh(40.0, (config.height, config.width)).clip(0, 255).astype(np.uint8)
        Image.fromarray(noise).save(io.BytesIO(), format="PNG", compress_level=1)
    return time.perf_counter() - start


def phantom(count: int, config: PhantomConfig, seed: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        for case in iter_cases(seed, count, config):
            write_case(case, seed, Path(folder))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = PhantomConfig()
    base = min(baseline(args.count, config) for _ in range(args.repeats))
    gen = min(phantom(args.count, config, seed) for seed in range(args.repeats))
    per_100 = gen * 100 / args.count
    print(f"images: {args.count} of {config.width}x{config.height}, best of {args.repeats}")
    print(f"baseline (noise + PNG encode): {base:.2f} s")
    print(f"phantom (render + image + masks): {gen:.2f} s  -> {per_100:.2f} s per 100 images")
    print(f"ratio phantom / baseline: {gen / base:.1f}x")
    print(f"target {TARGET_SECONDS_PER_100:.0f} s per 100: {'met' if per_100 < TARGET_SECONDS_PER_100 else 'MISSED'}")


if __name__ == "__main__":
    main()
