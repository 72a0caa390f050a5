"""Two ingests started together (issue 20): the second waits for the catalog's ingest lease, so near-duplicate
groups and patient splits come out as when the two run one after the other. Without the lease each run reads
the known images at its start and pairs split across the two sources are never grouped."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.catalog import Catalog
from flows.runtime.settings import load_settings

PAIRS = 8


def _pair_folders(root: Path) -> tuple[Path, Path]:
    """Two sources; image k of the second is a near-duplicate of image k of the first (slight noise)."""
    first, second = root / "first", root / "second"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    for k in range(PAIRS):
        rng = np.random.default_rng(k)
        pixels = rng.gamma(2.0, 40.0, (120, 160)).clip(0, 250)
        Image.fromarray(pixels.astype(np.uint8)).save(first / f"a{k}.png")
        noisy = pixels + rng.normal(0, 1.5, pixels.shape)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(second / f"b{k}.png")
    return first, second


def _groups(workspace: Path) -> dict[frozenset[str], set[str]]:
    """Near-duplicate groups (as sets of image ids, whichever image founded them) → the splits of their images."""
    catalog = Catalog(load_settings(workspace=workspace).resolved_catalog_url)
    try:
        images = list(catalog.iter_images())
    finally:
        catalog.close()
    members: dict[str, set[str]] = {}
    for image in images:
        members.setdefault(image.dup_group or image.image_id, set()).add(image.image_id)
    split = {image.image_id: image.split for image in images}
    return {frozenset(ids): {split[i] for i in ids} for ids in members.values()}


def _ingest(folder: Path, wait: float) -> None:
    from flows.stages.ingest import IngestParams, ingest_flow

    ingest_flow(
        IngestParams(
            kind="folder",
            path=str(folder),
            organ="breast",
            adapter_options={"layout": "plain"},
            wait_for_other_ingest_s=wait,
        )
    )


@pytest.mark.integration
def test_two_ingests_started_together_group_and_split_as_one_after_the_other(tmp_path, monkeypatch, prefect_api):
    first, second = _pair_folders(tmp_path / "sources")
    monkeypatch.setenv("LOOKCLOSER_PATIENT_KEY_SALT", "overlap drill salt, long enough")

    monkeypatch.setenv("LOOKCLOSER_WORKSPACE", str(tmp_path / "sequential"))
    _ingest(first, 0)
    _ingest(second, 0)
    sequential = _groups(tmp_path / "sequential")
    assert sorted(len(group) for group in sequential) == [2] * PAIRS  # every pair is one group

    monkeypatch.setenv("LOOKCLOSER_WORKSPACE", str(tmp_path / "together"))
    start, errors = threading.Barrier(2), []

    def run(folder: Path) -> None:
        start.wait()
        try:
            _ingest(folder, 120)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(folder,)) for folder in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    together = _groups(tmp_path / "together")
    assert set(together) == set(sequential)  # the same groups, whichever run went first
    assert all(len(splits) == 1 for splits in together.values())  # a group never straddles train and test
