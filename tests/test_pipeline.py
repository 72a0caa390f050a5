"""The parent flow: stages as sub-flows in order, skippable, resumable; train and evaluate find their version."""

from __future__ import annotations

import pytest

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.runtime.settings import SettingsError, load_settings
from flows.stages.pipeline import PipelineParams, dataset_version, pipeline_flow
from tests.teacher_fixtures import phantom_consensus

LABEL_STUDIO_AND_TRAINING = ["annotate", "pull", "consensus", "review", "train", "evaluate"]


def test_the_pipeline_runs_its_stages_in_order_skips_by_name_and_resumes(workspace, prefect_api):
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    records = phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=4)
    catalog.close()
    with pytest.raises(SettingsError, match="no release of us yet"):
        dataset_version("us", None)
    params = PipelineParams(dataset="us", skip=["ingest", *LABEL_STUDIO_AND_TRAINING])
    done = pipeline_flow(params)
    assert list(done) == ["synthesize", "publish"]
    assert done["synthesize"] == f"{records} rationales produced"
    assert done["publish"] == f"us@v1.0.0 ({records} rows)"
    assert dataset_version("us", None) == "v1.0.0"  # what train and evaluate use when publish is skipped
    again = pipeline_flow(params)  # resumable: nothing new, the release keeps its tag
    assert again["publish"] == done["publish"]
    catalog = Catalog(settings.resolved_catalog_url)
    assert catalog.releases() == ["us@v1.0.0"]
    catalog.close()


def test_an_unknown_stage_name_is_refused():
    with pytest.raises(ValueError, match="skip"):
        PipelineParams(skip=["ingest", "deploy"])
