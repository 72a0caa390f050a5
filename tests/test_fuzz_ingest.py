"""Hostile files: mutants of valid PNG, JPEG, TIFF, WebP, BMP, GIF and DICOM files go through ingest.

A seeded mutation loop (bit flips, byte overwrites, truncation, inserted junk, a repeated chunk) turns
seven valid small ultrasound-like files into mutants; every mutant must be ingested or quarantined with a
reason, never raise, and the ledger must account for each one. CI runs a few hundred cases with a fixed
seed (both in the test id); `make fuzz` runs many more (FUZZ_CASES, FUZZ_SEED).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.catalog import Catalog
from flows.ingest.core import IngestOptions, register_items
from flows.ingest.image_store import ImageStore
from flows.ingest.sources.dicom import iter_dicom_items
from flows.ingest.sources.folder import iter_folder_items
from flows.ingest.sources.phantom_burned_in import write_dicom_without_region

CASES = int(os.environ.get("FUZZ_CASES", "280"))
SEED = int(os.environ.get("FUZZ_SEED", "20261203"))
FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "webp": "WEBP", "bmp": "BMP", "gif": "GIF"}


def _speckle(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.gamma(2.0, 40.0, (72, 96)).clip(0, 255).astype(np.uint8))


def valid_files() -> dict[str, bytes]:
    """One small valid file per format (TIFF and JPEG with EXIF, where fuzzing found the crashers)."""
    files = {}
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated, so exif_transpose runs
    for suffix, fmt in FORMATS.items():
        buffer = io.BytesIO()
        kwargs = {"exif": exif} if fmt in ("JPEG", "TIFF", "WEBP", "PNG") else {}
        _speckle(len(files)).save(buffer, format=fmt, **kwargs)
        files[suffix] = buffer.getvalue()
    return files


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random mutations, each a kind that found decoder crashers before."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(5))
        position = int(rng.integers(len(out))) if out else 0
        if kind == 0:  # bit flips
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(len(out)))
                out[i] ^= 1 << int(rng.integers(8))
        elif kind == 1:  # overwrite a run of bytes (often in the header: sizes, offsets, EXIF)
            length = int(rng.integers(1, 16))
            out[position : position + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        elif kind == 2:  # truncate
            out = out[: max(1, position)]
        elif kind == 3:  # insert junk
            out[position:position] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        else:  # repeat a chunk (chunk tables and IFDs pointing at themselves)
            length = int(rng.integers(1, 128))
            out[position:position] = out[position : position + length] * int(rng.integers(2, 5))
    return bytes(out)


@pytest.mark.parametrize(("cases", "seed"), [(CASES, SEED)], ids=[f"cases={CASES}-seed={SEED}"])
def test_every_mutant_is_ingested_or_quarantined_never_raised(tmp_path: Path, cases: int, seed: int):
    rng = np.random.default_rng(seed)
    originals = valid_files()
    dicom_buffer = tmp_path / "valid.dcm"
    write_dicom_without_region(_speckle(99), dicom_buffer)
    originals["dcm"] = dicom_buffer.read_bytes()
    images, dicoms = tmp_path / "images", tmp_path / "dicom"
    images.mkdir()
    dicoms.mkdir()
    suffixes = sorted(originals)
    for case in range(cases):
        suffix = suffixes[case % len(suffixes)]
        folder = dicoms if suffix == "dcm" else images
        (folder / f"m{case:05d}.{suffix}").write_bytes(mutate(originals[suffix], rng))
    placed = {folder: sum(1 for _ in folder.iterdir()) for folder in (images, dicoms)}
    print(f"fuzz: {cases} mutants, seed {seed}")  # shown with -s, and in the test id
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    store = ImageStore(str(tmp_path / "store"))
    try:
        options = IngestOptions()
        salt = b"fuzz-salt-0123456789"
        from_images = register_items(
            iter_folder_items(images, organ="breast", layout="plain"), catalog, store, salt, options
        )
        from_dicom = register_items(iter_dicom_items(dicoms, organ="breast"), catalog, store, salt, options)
    finally:
        catalog.close()
    assert from_images.seen == placed[images]  # every mutant accounted for, counted independently
    assert from_dicom.seen >= placed[dicoms]  # a multi-frame mutant may hold more than one item
    reasons = {**from_images.quarantined, **from_dicom.quarantined}
    assert from_images.out + from_dicom.out > 0 and reasons  # both ways happened: the test exercised both
