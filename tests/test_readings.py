"""Label Studio export → ReaderAnnotation conversion, and what counts as a dispute (no server needed)."""

import pytest

from annotation.consensus import readers_disagree
from annotation.label_config import result_from_reading
from annotation.readings import readings_from_export
from schemas.records import ReaderAnnotation

SIZE = (200, 100)
READERS = {7: "R1", 8: "R2"}


def _annotation(aid, user, lesions, updated="2026-11-23T09:00:00Z"):
    return {
        "id": aid,
        "completed_by": user,
        "result": result_from_reading("liver", lesions, SIZE),
        "updated_at": updated,
        "lead_time": 3.5,
        "was_cancelled": False,
    }


def _task(annotations, image_id="a" * 64):
    return {"id": 11, "project": 3, "data": {"image_id": image_id, "organ": "liver"}, "annotations": annotations}


LESION = ([20.0, 10.0, 60.0, 50.0], {"echogenicity": "Hypoechoic", "shape": "Oval", "boundary": "Clear"})


def _pull(tasks):
    return list(readings_from_export(3, "liver", tasks, READERS.get))


def test_annotation_becomes_reader_annotations_in_original_pixels():
    [pulled] = _pull([_task([_annotation(5, 7, [LESION])])])
    assert pulled.reason is None and pulled.item_key == "3:5:2026-11-23T09:00:00Z"
    [reading] = pulled.readings
    assert reading.reader == "R1" and reading.attributes == LESION[1]
    assert reading.box == pytest.approx(LESION[0], abs=0.5)
    assert (reading.ls_task_id, reading.ls_annotation_id, reading.lead_time) == (11, 5, 3.5)


def test_second_annotation_on_a_reader_task_is_quarantined():
    pulled = _pull([_task([_annotation(5, 7, [LESION]), _annotation(6, 8, [LESION])])])
    assert [p.reason for p in pulled] == [None, "extra_annotation"]


def test_unknown_account_and_value_outside_the_vocabulary_are_quarantined():
    assert _pull([_task([_annotation(5, 99, [LESION])])])[0].reason == "unknown_reader"
    bad = _annotation(5, 7, [LESION])
    next(r for r in bad["result"] if r["from_name"] == "echogenicity")["value"]["choices"] = ["Purple"]
    assert _pull([_task([bad])])[0].reason == "value_not_in_vocabulary"


def test_an_edited_annotation_gets_a_new_key():
    first = _pull([_task([_annotation(5, 7, [LESION])])])[0].item_key
    edited = _pull([_task([_annotation(5, 7, [LESION], updated="2026-11-24T10:00:00Z")])])[0].item_key
    assert first != edited


def _reading(box, **attributes):
    values = {"echogenicity": "Hypoechoic", "shape": "Oval", "boundary": "Clear", **attributes}
    return ReaderAnnotation(
        image_id="a" * 64, organ="liver", reader="R", box=box, attributes=values, image_width=200, image_height=100
    )


def is_disputed(first, second, *, min_box_iou):
    return readers_disagree({"R1": first, "R2": second}, min_box_iou=min_box_iou)


def test_disputes():
    same = [_reading([20, 10, 60, 50])]
    assert not is_disputed(same, [_reading([21, 11, 61, 51])], min_box_iou=0.5)
    assert is_disputed(same, [_reading([20, 10, 60, 50], echogenicity="Isoechoic")], min_box_iou=0.5)
    assert is_disputed(same, [_reading([120, 10, 160, 50])], min_box_iou=0.5)
    assert is_disputed(same, [*same, _reading([120, 10, 160, 50])], min_box_iou=0.5)
