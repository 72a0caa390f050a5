"""The published row's columns are defined once (schemas/dataset.py, from `Sample`): the release's
`datasets.Features`, the training job's required columns and the evaluation harness's columns agree with it."""

from __future__ import annotations

from flows.release.shards import FEATURES
from schemas.dataset import COLUMNS, EVAL_COLUMNS, METADATA_COLUMNS, TRAINING_COLUMNS
from schemas.records import Sample


def test_the_release_features_are_the_sample_columns_in_order():
    assert tuple(FEATURES) == COLUMNS == tuple(Sample.model_fields)


def test_every_named_subset_is_made_of_published_columns():
    for subset in (TRAINING_COLUMNS, METADATA_COLUMNS, EVAL_COLUMNS):
        assert set(subset) <= set(COLUMNS), set(subset) - set(COLUMNS)
    assert set(METADATA_COLUMNS) <= set(TRAINING_COLUMNS)
