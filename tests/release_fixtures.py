"""A small published release of phantom data (consensus, template rationales, tagged v1.0.0) for release tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import load_dataset

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.release.publish import publish_release
from flows.release.repository import version_path
from flows.release.rows import FrameSettings
from flows.runtime.settings import Settings, load_settings
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from tests.teacher_fixtures import phantom_consensus

FRAMES = FrameSettings(min_pixels=56 * 56, max_pixels=256 * 256, crop_padding=0.0)


@pytest.fixture
def published(workspace):
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    store = ImageStore(settings.resolved_image_store_url)
    records = phantom_consensus(catalog, store, workspace / "src", count=9)
    run_synthesis(SynthesizeParams(progress=False), settings)
    folder = workspace / "releases" / "us-vqa"
    first = publish_release(catalog, store, folder, "us-vqa", FRAMES, max_shard_bytes=200_000)
    yield {"catalog": catalog, "store": store, "folder": folder, "first": first, "records": records}
    catalog.close()


def load(folder, version, worktrees, config="all"):
    path = version_path(folder, version, worktrees)
    return load_dataset(str(path), config, cache_dir=str(worktrees.parent / "hf-cache"))


def publish_small_release(root: Path, *, count: int = 6) -> Path:
    """A phantom release with a small model frame (fast on CPU), tagged v1.0.0; returns the v1.0.0 folder."""
    settings = Settings(workspace=root)
    catalog = Catalog(settings.resolved_catalog_url)
    try:
        store = ImageStore(settings.resolved_image_store_url)
        phantom_consensus(catalog, store, root / "src", count=count)
        run_synthesis(SynthesizeParams(progress=False), settings)
        folder = root / "releases" / "small"
        publish_release(catalog, store, folder, "small", FRAMES, provenance=None)
        return version_path(folder, "v1.0.0", root / "releases" / "small.versions")
    finally:
        catalog.close()


@pytest.fixture(scope="session")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small published release per session, for the training tests (read-only: copy before changing it)."""
    return publish_small_release(tmp_path_factory.mktemp("small-release"))
