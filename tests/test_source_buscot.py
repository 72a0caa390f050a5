import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.ingest.sources.buscot import BOUNDARY_CONFIDENCE, CALCIFICATION_MAP, EDGE_TO_MARGIN, iter_buscot_items
from schemas.vocabulary import normalize_value


def _image(path: Path) -> None:
    pixels = np.full((64, 96), 60, dtype=np.uint8)
    pixels[8:56, 10:86] = 200  # the crop is mostly lesion
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


REPORTS = {
    "trainval_000001@0.png": {
        "image_path": "BUS-Lesion/trainval/000001@0.png",
        "us_report": {
            "EchoCharacteristics": "LowEcho",
            "LesionEdge": "Irregular",
            "LesionBoundary": "BoundaryClear",
            "LesionCalcificationFeatures": "Microcalcification",
            "BIRADS": "4a",
        },
        "pathology_histology": {"pathology": "Malignant"},
    },
    "trainval_000001@1.png": {  # fields at the top level, no us_report
        "EchoCharacteristics": "CysticSolidMixedEcho",
        "LesionEdge": "Regular",
        "LesionBoundary": "BoundaryUnclear",
        "LesionCalcificationFeatures": "SuspectedCalcification",
        "BIRADS": 3,
    },
    "test_000002@0.png": {
        "us_report": {
            "EchoCharacteristics": "SlightlyLowEcho",
            "LesionEdge": "PartiallyRegular",
            "LesionBoundary": "BoundaryFairlyClear",
            "LesionCalcificationFeatures": "NoCalcification",
        }
    },
}
EXPERT = {
    "0": {"patient_id": "PAT-A", "dataset": "BUSI", "image_file": {"raw_image": "000001/000001.png"}},
    "1": {"patient_id": "PAT-B", "dataset": "X", "image_file": {"raw_image": "000002/000002.png"}},
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "BUSCoT"
    for name in ("trainval/000001@0.png", "trainval/000001@1.png", "test/000002@0.png"):
        _image(root / "BUS-Lesion" / name)
    (root / "DatasetFiles").mkdir()
    (root / "DatasetFiles" / "lesion_dataset.json").write_text(json.dumps(REPORTS))
    return root


def _by_ref(root: Path, **kwargs) -> dict:
    return {item.source_ref: item for item in iter_buscot_items(root, **kwargs)}


def test_items_point_at_the_crops_with_whole_image_annotations(tree: Path):
    items = _by_ref(tree)
    assert list(items) == ["trainval/000001@0.png", "trainval/000001@1.png", "test/000002@0.png"]
    first = items["trainval/000001@0.png"]
    assert first.source == "buscot" and first.organ == "breast" and first.error is None
    assert first.path == tree / "BUS-Lesion" / "trainval" / "000001@0.png" and first.image is None
    assert first.metadata == {"split_hint": "trainval", "birads": "4a"}
    (annotation,) = first.annotations
    assert annotation["box"] is None and annotation["origin"] == "metadata"
    assert annotation["attributes"] == {
        "echo_pattern": "Hypoechoic",
        "margin": "Indistinct",
        "calcifications": "In a mass",
    }
    assert items["test/000002@0.png"].metadata["split_hint"] == "test"


def test_mapped_values_are_canonical_vocabulary_values(tree: Path):
    attributes = {ref: item.annotations[0]["attributes"] for ref, item in _by_ref(tree).items()}
    for values in attributes.values():
        for name, value in values.items():
            assert normalize_value("breast", name, value) == value
    assert attributes["trainval/000001@1.png"]["echo_pattern"] == "Complex cystic and solid"
    assert attributes["test/000002@0.png"] == {
        "echo_pattern": "Hypoechoic",
        "margin": "Indistinct",
        "calcifications": "None",
    }
    # every explicit mapping lands on a vocabulary value (a YAML edit that breaks one fails here)
    for attribute, value_map in (("margin", EDGE_TO_MARGIN), ("calcifications", CALCIFICATION_MAP)):
        for target in value_map.values():
            assert normalize_value("breast", attribute, target) == target


def test_unmapped_calcification_is_left_out_not_guessed(tree: Path):
    annotation = _by_ref(tree)["trainval/000001@1.png"].annotations[0]
    assert "calcifications" not in annotation["attributes"]  # SuspectedCalcification is equivocal
    assert annotation["attributes"]["margin"] == "Circumscribed"


def test_default_confidence_follows_the_boundary(tree: Path):
    confidence = {ref: item.annotations[0]["confidence"] for ref, item in _by_ref(tree).items()}
    assert confidence["trainval/000001@0.png"] == {"echo_pattern": 1, "margin": 1, "calcifications": 1}  # Clear
    assert confidence["trainval/000001@1.png"] == {"echo_pattern": 0, "margin": 0}  # Unclear
    assert confidence["test/000002@0.png"] == {"echo_pattern": 1, "margin": 1, "calcifications": 1}  # FairlyClear
    assert BOUNDARY_CONFIDENCE["BoundarySomewhatUnclear"] == 0


def test_confidence_map_and_attributes_override_the_default(tree: Path):
    items = _by_ref(tree, confidence_map={"BoundaryFairlyClear": 0}, confidence_attributes=("margin",))
    assert items["test/000002@0.png"].annotations[0]["confidence"] == {"margin": 0}
    assert items["trainval/000001@0.png"].annotations[0]["confidence"] == {"margin": 1}


@pytest.mark.parametrize(
    "kwargs", [{"confidence_map": {"BoundaryClear": 2}}, {"confidence_attributes": ("not_an_attribute",)}]
)
def test_bad_confidence_settings_fail_before_iterating(tree: Path, kwargs: dict):
    with pytest.raises(ValueError):
        iter_buscot_items(tree, **kwargs)


def test_metadata_missing_still_yields_the_crop(tree: Path):
    _image(tree / "BUS-Lesion" / "test" / "000003@0.png")
    item = _by_ref(tree)["test/000003@0.png"]
    assert item.error is None and item.path is not None
    assert item.annotations == [] and item.metadata["metadata_missing"] is True


@pytest.mark.parametrize("content", ["{not json", "[1, 2", "42"])
def test_metadata_unreadable_quarantines_every_crop(tree: Path, content: str):
    (tree / "DatasetFiles" / "lesion_dataset.json").write_text(content)
    items = list(iter_buscot_items(tree))
    assert len(items) == 3 and {item.error for item in items} == {"metadata_unreadable"}


def test_a_record_that_is_not_an_object_is_unreadable(tree: Path):
    reports = {**REPORTS, "test_000002@0.png": "LowEcho"}
    (tree / "DatasetFiles" / "lesion_dataset.json").write_text(json.dumps(reports))
    items = _by_ref(tree)
    assert items["test/000002@0.png"].error == "metadata_unreadable"
    assert items["trainval/000001@0.png"].error is None


def test_a_record_without_its_crop_is_image_missing(tree: Path):
    (tree / "BUS-Lesion" / "test" / "000002@0.png").unlink()
    items = list(iter_buscot_items(tree))
    missing = [item for item in items if item.error == "image_missing"]
    assert [item.source_ref for item in missing] == ["test/000002@0.png"]
    assert len(items) == 3


def test_patient_ids_come_from_bus_expert(tree: Path):
    (tree / "DatasetFiles" / "BUS-Expert_dataset.json").write_text(json.dumps(EXPERT))
    patients = {ref: item.patient_id for ref, item in _by_ref(tree.parent).items()}  # the parent folder works too
    assert patients == {
        "trainval/000001@0.png": "PAT-A",
        "trainval/000001@1.png": "PAT-A",
        "test/000002@0.png": "PAT-B",
    }


def test_bus_expert_as_a_list_of_records(tree: Path):
    expert = [{"image_name": "000002@0.png", "patient_id": 7}]
    (tree / "DatasetFiles" / "BUS-Expert_dataset.json").write_text(json.dumps(expert))
    assert _by_ref(tree)["test/000002@0.png"].patient_id == "7"


def test_without_patient_ids_crops_of_one_image_share_a_key(tree: Path):
    patients = {ref: item.patient_id for ref, item in _by_ref(tree).items()}
    assert patients["trainval/000001@0.png"] == patients["trainval/000001@1.png"] != patients["test/000002@0.png"]
