import json

import pytest
from pydantic import ValidationError

from schemas.export import export_json_schemas
from schemas.records import RECORD_TYPES, ConsensusRecord, ImageRecord, ReaderAnnotation, SourceAnnotation

IMAGE_ID = "a" * 64


def _image(**overrides):
    values = dict(
        image_id=IMAGE_ID,
        organ="liver",
        source="phantom",
        source_ref="x.png",
        patient_key="k",
        width=100,
        height=80,
        phash="0123456789abcdef",
        split="train",
    )
    return ImageRecord(**{**values, **overrides})


def test_image_record_quarantine_needs_reason():
    assert _image(status="quarantined", quarantine_reason="image_too_small").quarantine_reason
    with pytest.raises(ValidationError, match="quarantine_reason"):
        _image(status="quarantined")
    with pytest.raises(ValidationError, match="quarantine_reason"):
        _image(quarantine_reason="why")


def test_image_record_rejects_unknown_organ_and_bad_id():
    with pytest.raises(ValidationError):
        _image(organ="kidney")
    with pytest.raises(ValidationError):
        _image(image_id="not-a-sha")


def test_reader_box_outside_image_names_box_and_size():
    with pytest.raises(ValidationError) as err:
        ReaderAnnotation(
            image_id=IMAGE_ID, organ="liver", reader="r1", box=[10, 10, 120, 50], image_width=100, image_height=80
        )
    assert "[10.0, 10.0, 120.0, 50.0]" in str(err.value) and "100x80" in str(err.value)


def test_annotation_attributes_are_normalised_and_checked():
    annotation = SourceAnnotation(
        image_id=IMAGE_ID,
        organ="breast",
        origin="metadata",
        attributes={"echo_pattern": "LowEcho"},
        image_width=10,
        image_height=10,
    )
    assert annotation.attributes == {"echo_pattern": "Hypoechoic"}
    with pytest.raises(ValidationError, match="allowed: "):
        SourceAnnotation(
            image_id=IMAGE_ID,
            organ="breast",
            origin="metadata",
            attributes={"echo_pattern": "sparkly"},
            image_width=10,
            image_height=10,
        )


def test_consensus_record_checks_label_box_and_c():
    record = ConsensusRecord(
        image_id=IMAGE_ID,
        organ="liver",
        attribute="boundary",
        label="ill-defined",
        confidence=0,
        agreement=0.5,
        box=[1, 2, 30, 40],
        confidence_source="dual_reader",
        image_width=100,
        image_height=80,
    )
    assert record.label == "Unclear" and record.record_id == f"{IMAGE_ID}:boundary"
    with pytest.raises(ValidationError):
        ConsensusRecord(**{**record.model_dump(), "confidence": 2})
    with pytest.raises(ValidationError, match="empty or inverted"):
        ConsensusRecord(**{**record.model_dump(), "box": [30, 2, 1, 40]})


def test_schemas_export_writes_valid_json_schema_for_every_record(tmp_path):
    paths = export_json_schemas(tmp_path)
    assert {p.name for p in paths} == {f"{name}.schema.json" for name in RECORD_TYPES}
    image_schema = json.loads((tmp_path / "ImageRecord.schema.json").read_text())
    assert {"image_id", "organ", "patient_key", "split", "phash"} <= set(image_schema["properties"])
    assert image_schema["properties"]["organ"]["enum"] == ["breast", "liver", "thyroid"]
