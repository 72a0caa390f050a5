"""Label configs from the vocabulary, result checks (one test per reason), and the pixel ↔ percent round trip."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_studio_sdk.label_interface import LabelInterface

from annotation import label_config as lc
from annotation.label_config import (
    label_config,
    label_interface,
    prediction_result,
    reading_from_result,
    result_from_reading,
    validate_label_config,
    validate_result,
)
from schemas.records import ReaderAnnotation
from schemas.vocabulary import VocabularyError, _parse, load_vocabulary, registered_organs

SIZE = (640, 480)
NO_BOX = "no_lesion_box"
LIVER = {"echogenicity": "Hypoechoic", "shape": "Oval", "boundary": "Clear"}


def liver_result() -> list[dict]:
    return result_from_reading("liver", [([100, 120, 180, 200], LIVER)], SIZE)


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("organ", registered_organs())
def test_config_validates_and_matches_the_vocabulary(organ):
    xml = label_config(organ)
    validate_label_config(xml, organ=organ)
    interface = LabelInterface(xml)  # read back through the SDK, not by string matching
    controls = {c.name: c for c in interface.controls}
    vocabulary = load_vocabulary(organ)
    assert controls.pop("lesion").labels == ["Lesion"]
    assert list(controls) == list(vocabulary.attributes)
    for name, attribute in vocabulary.attributes.items():
        control = controls[name]
        assert control.tag == "Choices"
        assert control.labels == attribute.canonical_values
        assert control.is_output_required == attribute.required
        assert control.attr["perRegion"] == "true" and not control.is_multiple_choice
        assert control.to_name == ["image"]
    assert [(o.name, o.tag, o.value) for o in interface.objects] == [("image", "Image", "$image")]


def test_config_escapes_values(monkeypatch):
    nasty = 'Hypo & "very" <low>'
    vocabulary = _parse(
        {
            "organ": "liver",
            "standard": "test",
            "attributes": {
                "echogenicity": {"answer_key": "echo", "questions": ["q"], "values": {nasty: {}, "Iso": {}}}
            },
        }
    )
    monkeypatch.setattr(lc, "load_vocabulary", lambda organ: vocabulary)
    xml = label_config("liver")
    assert "&amp;" in xml and "&quot;" in xml and "&lt;" in xml
    assert {c.name: c.labels for c in LabelInterface(xml).controls}["echogenicity"] == [nasty, "Iso"]
    validate_label_config(xml)


BAD_CONFIGS = {
    "not_xml": '<View><Image name="image" value="$image"></View>',
    "to_name_unknown": '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="lesion" toName="img"><Label value="Lesion"/></RectangleLabels></View>',
    "no_box_tool": '<View><Image name="image" value="$image"/>'
    '<Choices name="shape" toName="image" perRegion="true"><Choice value="Oval"/></Choices></View>',
    "global_choices": '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="lesion" toName="image"><Label value="Lesion"/></RectangleLabels>'
    '<Choices name="shape" toName="image"><Choice value="Oval"/></Choices></View>',
    "multiple_choice": '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="lesion" toName="image"><Label value="Lesion"/></RectangleLabels>'
    '<Choices name="shape" toName="image" perRegion="true" choice="multiple"><Choice value="Oval"/></Choices></View>',
    "unknown_tag": '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="lesion" toName="image"><Label value="Lesion"/></RectangleLabels>'
    '<Foo name="shape" toName="image"/></View>',
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_config_is_a_value_error(name):
    with pytest.raises(ValueError):
        validate_label_config(BAD_CONFIGS[name])


def test_config_of_another_organ_does_not_match():
    validate_label_config(label_config("breast"))  # a fine config in itself...
    with pytest.raises(ValueError, match="differ from the liver attributes"):
        validate_label_config(label_config("breast"), organ="liver")  # ...but not liver's


def test_required_flag_drift_is_caught():
    xml = label_config("breast").replace(
        'name="calcifications" toName="image" choice="single" perRegion="true" required="false"',
        'name="calcifications" toName="image" choice="single" perRegion="true" required="true"',
    )
    assert xml != label_config("breast")
    with pytest.raises(ValueError, match="required"):
        validate_label_config(xml, organ="breast")


# --- result checks: one test per reason -----------------------------------------------------------


def _box(result):
    return next(item for item in result if item["type"] == "rectanglelabels")


def _choice(result, name):
    return next(item for item in result if item.get("from_name") == name)


def _set_value(result, name, value):
    _choice(result, name)["value"]["choices"] = value
    return result


def _move_box(result, **geometry):
    _box(result)["value"].update(geometry)
    return result


def _other_region(result):
    _choice(result, "shape")["id"] = "elsewhere"
    return result


def _drop(result, name):
    return [item for item in result if item.get("from_name") != name]


def _rename(result):
    _choice(result, "shape")["from_name"] = "size"
    return result


def _second_box_same_id(result):
    return [*result, copy.deepcopy(_box(result))]


MUTATIONS = {
    "value_not_in_vocabulary": lambda r: _set_value(r, "echogenicity", ["Purple"]),
    "box_zero_area": lambda r: _move_box(r, width=0.0),
    "box_outside_image": lambda r: _move_box(r, x=95.0),
    "box_rotated": lambda r: _move_box(r, rotation=30.0),
    "required_attribute_missing": lambda r: _drop(r, "boundary"),
    "unknown_control": _rename,
    "choice_without_region": _other_region,
    "no_lesion_box": lambda r: [item for item in r if item["type"] != "rectanglelabels"],
    "multiple_values": lambda r: _set_value(r, "shape", ["Oval", "Round"]),
    "duplicate_region_id": _second_box_same_id,
    "malformed_item": lambda r: _move_box(r, x="left"),
}


def test_valid_result_has_no_reason():
    assert validate_result("liver", liver_result()) == []


def test_every_reason_has_a_case():
    assert set(MUTATIONS) == set(lc.REASONS)


@pytest.mark.parametrize("reason", MUTATIONS)
def test_each_reason(reason):
    assert validate_result("liver", MUTATIONS[reason](liver_result()))[0] == reason  # the first is the one logged


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: _move_box(r, x=-3.0), ["box_outside_image"]),
        (lambda r: _move_box(r, height=-5.0), ["box_zero_area"]),
        (lambda r: _move_box(r, rectanglelabels=["Tumour"]), ["value_not_in_vocabulary"]),
        (lambda r: _set_value(r, "shape", []), ["required_attribute_missing"]),
        (lambda r: _move_box(r, rotation=360.0), []),
        (lambda r: [*r, {"from_id": "lesion-0", "to_id": "lesion-0", "type": "relation"}], []),
        (lambda r: [*r, "not an item"], ["malformed_item"]),
        (lambda r: [{**_box(r), "to_name": "video"}, *r[1:]], ["unknown_control", NO_BOX, "choice_without_region"]),
        (lambda r: [{**_box(r), "type": "choices"}, *r[1:]], ["unknown_control", NO_BOX, "choice_without_region"]),
        (lambda r: [], ["no_lesion_box"]),
    ],
)
def test_specific_reasons(mutate, expected):
    assert validate_result("liver", mutate(liver_result())) == expected


def test_optional_attribute_may_be_missing():
    required_only = {"shape": "Oval", "orientation": "Parallel", "margin": "Angular", "echo_pattern": "Isoechoic"}
    result = result_from_reading("breast", [([1, 1, 50, 50], required_only)], SIZE)
    assert validate_result("breast", result) == []
    with pytest.raises(ValueError, match="required_attribute_missing"):
        result_from_reading("breast", [([1, 1, 50, 50], {"shape": "Oval"})], SIZE)


def test_sdk_lets_through_what_we_reject():
    """Why these checks exist: the SDK accepts these results, and the server stores them."""
    for reason in (
        "box_zero_area",
        "box_outside_image",
        "box_rotated",
        "multiple_values",
        "required_attribute_missing",
    ):
        result = MUTATIONS[reason](liver_result())
        assert label_interface("liver").validate_prediction({"result": result}, return_errors=True) == []
        assert reason in validate_result("liver", result)


def test_generated_results_pass_the_sdk():
    interface = label_interface("liver")
    assert interface.validate_prediction({"result": liver_result()}, return_errors=True) == []
    prediction = prediction_result("liver", [[10, 10, 60, 60], [200, 200, 260, 300]], SIZE)
    assert interface.validate_prediction({"result": prediction}, return_errors=True) == []


# --- readings ↔ results ---------------------------------------------------------------------------


def test_prediction_is_boxes_only():
    result = prediction_result("thyroid", [[10, 10, 60, 60]], SIZE)
    assert [item["type"] for item in result] == ["rectanglelabels"]
    assert validate_result("thyroid", result, require_attributes=False) == []
    assert validate_result("thyroid", result) == ["required_attribute_missing"]
    with pytest.raises(ValueError):
        prediction_result("thyroid", [[600, 10, 700, 60]], SIZE)  # outside a 640-wide image


def test_answers_share_the_id_of_their_box():
    result = result_from_reading("liver", [([10, 10, 60, 60], LIVER), ([300, 10, 360, 60], LIVER)], SIZE)
    boxes = [item["id"] for item in result if item["type"] == "rectanglelabels"]
    assert len(set(boxes)) == 2
    for box_id in boxes:
        assert {i["from_name"] for i in result if i["id"] == box_id and i["type"] == "choices"} == set(LIVER)


def test_synonyms_are_written_canonical_and_unknown_values_refused():
    result = result_from_reading("liver", [([10, 10, 60, 60], {**LIVER, "echogenicity": "hypo-echoic"})], SIZE)
    assert _choice(result, "echogenicity")["value"]["choices"] == ["Hypoechoic"]
    with pytest.raises(VocabularyError):
        result_from_reading("liver", [([10, 10, 60, 60], {**LIVER, "echogenicity": "purple"})], SIZE)
    with pytest.raises(VocabularyError):
        result_from_reading("liver", [([10, 10, 60, 60], {**LIVER, "colour": "red"})], SIZE)


def test_reading_is_ordered_by_x_then_y():
    boxes = [[300, 50, 350, 90], [20, 300, 60, 340], [20, 100, 60, 140]]
    result = result_from_reading("liver", [(box, LIVER) for box in boxes], SIZE)
    reading = reading_from_result("liver", result)
    assert [lesion["lesion_index"] for lesion in reading] == [0, 1, 2]
    assert [[round(v, 6) for v in lesion["box"][:2]] for lesion in reading] == [[20, 100], [20, 300], [300, 50]]


def test_reading_of_an_unacceptable_result_is_refused():
    with pytest.raises(ValueError, match="box_outside_image"):
        reading_from_result("liver", _move_box(liver_result(), x=95.0))


def test_reading_makes_reader_annotations():
    for lesion in reading_from_result("liver", liver_result()):
        record = ReaderAnnotation(
            image_id="0" * 64, organ="liver", reader="A", image_width=SIZE[0], image_height=SIZE[1], **lesion
        )
        assert record.attributes == LIVER


@st.composite
def readings(draw):
    organ = draw(st.sampled_from(registered_organs()))
    width, height = draw(st.integers(8, 4000)), draw(st.integers(8, 4000))
    lesions = []
    for _ in range(draw(st.integers(1, 3))):
        x1 = draw(st.floats(0, width - 1))
        y1 = draw(st.floats(0, height - 1))
        x2 = draw(st.floats(x1 + 1, width))
        y2 = draw(st.floats(y1 + 1, height))
        attributes = {
            name: draw(st.sampled_from(attribute.canonical_values))
            for name, attribute in load_vocabulary(organ).attributes.items()
        }
        lesions.append(([x1, y1, x2, y2], attributes))
    return organ, (width, height), lesions


@settings(max_examples=200, deadline=None)
@given(readings())
def test_round_trip_within_half_a_pixel(case):
    organ, size, lesions = case
    reading = reading_from_result(organ, result_from_reading(organ, lesions, size))
    expected = sorted(lesions, key=lambda lesion: lesion[0])
    assert len(reading) == len(expected)
    for got, (box, attributes) in zip(reading, expected, strict=True):
        assert all(abs(a - b) <= 0.5 for a, b in zip(got["box"], box, strict=True))
        assert 0 <= got["box"][0] < got["box"][2] <= size[0] and 0 <= got["box"][1] < got["box"][3] <= size[1]
        assert got["attributes"] == attributes
