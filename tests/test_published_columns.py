"""The published row's columns are defined once (schemas/dataset.py, from `Sample`, with one storage type each):
the release's `datasets.Features`, the training job's required columns, the evaluation harness's columns and the
release gate's value sets agree with it."""

from __future__ import annotations

from typing import get_args

import yaml
from datasets import Image, List, Value

from flows.release.shards import FEATURES, to_feature
from flows.release.validation import DEFAULT_SUITE, SUITE_DIR
from schemas.dataset import COLUMN_TYPES, COLUMNS, EVAL_COLUMNS, IMAGE, METADATA_COLUMNS, TRAINING_COLUMNS, ListOf
from schemas.records import Sample, Split


def test_the_release_features_are_the_sample_columns_in_order():
    assert tuple(FEATURES) == COLUMNS == tuple(Sample.model_fields)


def test_every_named_subset_is_made_of_published_columns():
    for subset in (TRAINING_COLUMNS, METADATA_COLUMNS, EVAL_COLUMNS):
        assert set(subset) <= set(COLUMNS), set(subset) - set(COLUMNS)
    assert set(METADATA_COLUMNS) <= set(TRAINING_COLUMNS)


def test_every_published_column_has_one_storage_type_in_order():
    assert tuple(COLUMN_TYPES) == COLUMNS


def test_each_kind_of_column_type_becomes_its_datasets_feature():
    assert to_feature("int8") == Value("int8") and to_feature(IMAGE) == Image()
    assert to_feature(ListOf("int32", length=4)) == List(Value("int32"), length=4)
    assert to_feature(ListOf({"role": "string", "parts": ListOf(IMAGE)})) == List(
        {"role": Value("string"), "parts": List(Image())}
    )
    assert FEATURES["bbox_orig"] == List(Value("float64"), length=4) and FEATURES["images"] == List(Image())


def test_the_release_gate_allows_exactly_the_values_the_row_allows():
    """The suite's value sets for c and split are the `Sample` field's literals, not a second list."""
    suite = yaml.safe_load((SUITE_DIR / f"{DEFAULT_SUITE}.yaml").read_text())
    value_sets = {
        e["kwargs"]["column"]: e["kwargs"]["value_set"]
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set"
    }
    assert value_sets["confidence"] == list(get_args(Sample.model_fields["confidence"].annotation))
    assert value_sets["split"] == list(get_args(Split))
