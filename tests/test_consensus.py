"""Every branch of the consensus rules, on tiny inline readings (liver: echogenicity, shape, boundary)."""

import pytest

from annotation.consensus import MIN_BOX_IOU, ConsensusPolicy, derive_consensus, fuse_boxes, match_lesions
from schemas.frames import iou
from schemas.records import ReaderAnnotation, SourceAnnotation

IMAGE, SIZE = "a" * 64, (200, 100)
AGREED = {"echogenicity": "Hypoechoic", "shape": "Oval", "boundary": "Clear"}


def _read(reader, box=(20, 10, 60, 50), lesion=0, adjudication=False, **attributes):
    return ReaderAnnotation(
        image_id=IMAGE,
        organ="liver",
        reader=reader,
        lesion_index=lesion,
        box=list(box) if box else None,
        attributes={**AGREED, **attributes},
        image_width=SIZE[0],
        image_height=SIZE[1],
        adjudication=adjudication,
    )


def _run(readings, sources=(), **policy):
    outcomes = derive_consensus(IMAGE, "liver", SIZE, readings, list(sources), ConsensusPolicy(**policy))
    return {o.attribute: o for o in outcomes}


def test_agreement_gives_c1_with_the_shared_label_and_a_fused_box():
    out = _run([_read("R1"), _read("R2", box=(22, 12, 62, 52))])
    record = out["echogenicity"].record
    assert (record.label, record.confidence, record.agreement, out["echogenicity"].rule) == (
        "Hypoechoic",
        1,
        1.0,
        "agreement",
    )
    assert record.box == [21, 11, 61, 51] and not record.needs_review and record.box_iou > 0.8
    assert record.reader_labels == {"R1": "Hypoechoic", "R2": "Hypoechoic"}
    assert record.confidence_source == "dual_reader"


def test_disagreement_auto_without_adjudication_takes_the_primary_reader():
    out = _run([_read("R1"), _read("R2", echogenicity="Isoechoic")])
    record = out["echogenicity"].record
    assert (record.label, record.confidence, record.agreement) == ("Hypoechoic", 0, 0.5)
    assert out["echogenicity"].rule == "primary_reader:R1" and out["shape"].record.confidence == 1


def test_disagreement_with_an_adjudication_takes_its_answer():
    readings = [
        _read("R1"),
        _read("R2", echogenicity="Isoechoic"),
        _read("A1", adjudication=True, echogenicity="Anechoic"),
    ]
    out = _run(readings)
    record = out["echogenicity"].record
    assert (record.label, record.confidence, record.confidence_source) == ("Anechoic", 0, "adjudicated")
    assert "A1" not in record.reader_labels


@pytest.mark.parametrize(
    ("policy", "reason", "label"),
    [
        ({"disagreement": "adjudicated"}, "awaiting_adjudication", None),
        ({"disagreement": "exclude"}, "excluded_disagreement", None),
        ({"disagreement": "primary_reader", "primary_reader": "R2"}, None, "Isoechoic"),
    ],
)
def test_each_disagreement_policy(policy, reason, label):
    out = _run([_read("R1"), _read("R2", echogenicity="Isoechoic")], **policy)["echogenicity"]
    assert out.reason == reason
    assert (out.record.label if out.record else None) == label


def test_three_readers_agreement_is_the_share_of_the_mode_and_threshold_decides_c():
    readings = [_read("R1"), _read("R2"), _read("R3", echogenicity="Isoechoic")]
    unanimous = _run(readings)["echogenicity"].record
    assert unanimous.agreement == pytest.approx(2 / 3) and unanimous.confidence == 0
    majority = _run(readings, agreement_threshold=0.6)["echogenicity"].record
    assert (majority.label, majority.confidence) == ("Hypoechoic", 1)


def _metadata(c=0, box=None):
    return SourceAnnotation(
        image_id=IMAGE,
        organ="liver",
        origin="metadata",
        box=box,
        attributes={"boundary": "Unclear"},
        confidence={"boundary": c},
        image_width=SIZE[0],
        image_height=SIZE[1],
    )


def test_metadata_confidence_without_readers():
    out = _run([], sources=[_metadata(c=0)])
    record = out["boundary"].record
    assert (record.label, record.confidence, record.confidence_source) == ("Unclear", 0, "metadata")
    assert record.box == [0, 0, 200, 100]  # a lesion crop: the whole image
    assert out["shape"].reason == "no_readings"  # the source graded only the boundary


def test_metadata_versus_readers_precedence():
    readings = [_read("R1"), _read("R2")]
    assert _run(readings, sources=[_metadata(c=0)])["boundary"].record.confidence == 1  # readers win by default
    record = _run(readings, sources=[_metadata(c=0)], metadata_precedence="metadata")["boundary"].record
    assert (record.confidence, record.confidence_source, record.label) == (0, "metadata", "Unclear")


def test_boxes_below_the_overlap_threshold_need_review_unless_adjudicated():
    apart = [_read("R1", box=(10, 10, 40, 40)), _read("R2", box=(35, 35, 70, 70))]
    record = _run(apart)["shape"].record
    assert record.needs_review and record.box_iou < 0.5
    adjudicated = _run([*apart, _read("A1", box=(12, 12, 42, 42), adjudication=True)])["shape"].record
    assert not adjudicated.needs_review and adjudicated.box == [12, 12, 42, 42]


@pytest.mark.parametrize(
    ("how", "expected"), [("mean", [15, 15, 45, 45]), ("union", [10, 10, 50, 50]), ("intersection", [20, 20, 40, 40])]
)
def test_box_fusion_modes(how, expected):
    assert fuse_boxes([[10, 10, 40, 40], [20, 20, 50, 50]], how) == expected


def test_multi_lesion_images_are_matched_before_fusing():
    r1 = [_read("R1", box=(10, 10, 40, 40), lesion=0), _read("R1", box=(120, 20, 190, 90), lesion=1)]
    r2 = [_read("R2", box=(118, 22, 188, 92), lesion=0), _read("R2", box=(11, 11, 41, 41), lesion=1)]
    lesions = match_lesions({"R1": r1, "R2": r2})
    assert len(lesions) == 2
    assert all(iou(lesion.by_reader["R1"].box, lesion.by_reader["R2"].box) > 0.8 for lesion in lesions)
    record = _run([*r1, *r2])["shape"].record
    assert record.box[0] > 100 and record.box_iou > 0.8  # the larger lesion, fused with its true partner


@pytest.mark.parametrize(
    ("readings", "reason"),
    [
        ([_read("R1"), _read("R2", box=None)], "reader_without_box"),
        ([_read("R1")], "single_reading"),
        ([], "no_readings"),
        ([_read("R1"), _read("R1", box=(21, 11, 61, 51)), _read("R2")], "duplicate_reading"),
        ([_read("R1"), _read("R2"), _read("A1", adjudication=True)], "adjudication_without_dispute"),
    ],
)
def test_bad_input_is_a_reason_for_that_image_attribute(readings, reason):
    assert _run(readings)["echogenicity"].reason == reason


def test_a_reader_missing_an_attribute():
    r2 = _read("R2")
    r2 = r2.model_copy(update={"attributes": {"shape": "Oval", "boundary": "Clear"}})
    out = _run([_read("R1"), r2])
    assert out["echogenicity"].reason == "reader_missing_attribute" and out["shape"].record is not None


def test_label_outside_the_vocabulary():
    bad = _read("R2").model_copy(update={"attributes": {**AGREED, "echogenicity": "Purple"}})
    assert _run([_read("R1"), bad])["echogenicity"].reason == "label_not_in_vocabulary"


def test_a_dispute_on_a_second_lesion_makes_the_adjudication_legitimate():
    """Pull sends the image to adjudication for it; consensus must not call that adjudication unwarranted."""
    main = dict(box=(10, 10, 90, 90))
    readings = [
        _read("R1", **main),
        _read("R1", box=(120, 20, 140, 40), lesion=1),
        _read("R2", **main),
        _read("R2", box=(120, 20, 140, 40), lesion=1, shape="Round"),
        _read("A1", adjudication=True, **main),
    ]
    out = _run(readings)["shape"]
    assert out.reason is None and out.record.confidence == 1  # the main lesion agrees


def test_min_box_iou_has_one_owner():
    """The pull stage routes disputes with the number consensus decides with (one default, one set of bounds)."""
    from flows.stages.params import PullParams

    policy, pull = ConsensusPolicy.model_fields["min_box_iou"], PullParams.model_fields["min_box_iou"]
    assert pull.default == policy.default == MIN_BOX_IOU
    assert pull.metadata == policy.metadata
