import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.ingest.sources.manifest import iter_manifest_items
from schemas.vocabulary import normalize_value

LESION_BOX = [30.0, 20.0, 60.0, 44.0]


def _image(path: Path) -> Path:
    pixels = np.full((64, 96), 60, dtype=np.uint8)
    pixels[20:44, 30:60] = 220  # a bright lesion
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _write_csv(path: Path, rows: list[dict]) -> Path:
    columns = sorted({key for row in rows for key in row})
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()})
    return path


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def rows(tmp_path: Path) -> list[dict]:
    _image(tmp_path / "img" / "a.png")
    absolute = _image(tmp_path / "elsewhere" / "b.png")
    return [
        {
            "path": "img/a.png",
            "organ": "breast",
            "patient_id": "P1",
            "boxes": [LESION_BOX, [70, 5, 90, 15]],
            "attributes": {"echo_pattern": "LowEcho", "margin": "well-defined"},
            "confidence": {"echo_pattern": 1, "margin": 0},
            "readers": {"r1": {"echo_pattern": "Hypoechoic", "box": LESION_BOX}, "r2": {"margin": "Angular"}},
        },
        {
            "path": str(absolute),
            "boxes": [LESION_BOX],
            "attributes": [{"echogenicity": "HighEcho", "boundary": "BoundaryClear"}],
        },
    ]


def test_csv_and_jsonl_give_the_same_items(tmp_path: Path, rows: list[dict]):
    from_csv = list(iter_manifest_items(_write_csv(tmp_path / "m.csv", rows), organ="liver"))
    from_jsonl = list(iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", rows), organ="liver"))
    # a row is named by its image and the image's content, not by its row number
    assert [i.source_ref.removeprefix("m.csv:") for i in from_csv] == [
        i.source_ref.removeprefix("m.jsonl:") for i in from_jsonl
    ]
    assert all("#" in i.source_ref for i in from_csv)
    for a, b in zip(from_csv, from_jsonl, strict=True):
        a.source_ref = b.source_ref = ""
        assert a == b
    assert all(i.error is None for i in from_csv)


def test_row_fields_become_annotations_readings_and_confidence(tmp_path: Path, rows: list[dict]):
    first, second = iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", rows), organ="liver")
    assert first.source == "manifest" and first.organ == "breast" and first.patient_id == "P1"
    assert first.path == tmp_path / "img" / "a.png" and first.image is None
    # a dict of attributes applies to every lesion; confidence rides along with origin "manifest"
    assert [a["box"] for a in first.annotations] == [LESION_BOX, [70.0, 5.0, 90.0, 15.0]]
    for annotation in first.annotations:
        assert annotation["attributes"] == {"echo_pattern": "LowEcho", "margin": "well-defined"}
        assert annotation["confidence"] == {"echo_pattern": 1, "margin": 0}
        assert annotation["origin"] == "manifest"
    assert first.readings == [
        {"reader": "r1", "lesion_index": 0, "box": LESION_BOX, "attributes": {"echo_pattern": "Hypoechoic"}},
        {"reader": "r2", "lesion_index": 0, "box": None, "attributes": {"margin": "Angular"}},
    ]
    # the argument is the default organ; an absolute path stays; answer keys become attribute names
    assert second.organ == "liver" and second.path == tmp_path / "elsewhere" / "b.png" and second.patient_id is None
    assert second.annotations[0]["attributes"] == {"echogenicity": "HighEcho", "boundary": "BoundaryClear"}


def test_attribute_values_normalise_through_the_vocabulary(tmp_path: Path, rows: list[dict]):
    items = list(iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", rows), organ="liver"))
    canonical = {
        (item.organ, name): normalize_value(item.organ, name, value)
        for item in items
        for annotation in item.annotations
        for name, value in annotation["attributes"].items()
    }
    assert canonical == {
        ("breast", "echo_pattern"): "Hypoechoic",
        ("breast", "margin"): "Circumscribed",
        ("liver", "echogenicity"): "Hyperechoic",
        ("liver", "boundary"): "Clear",
    }


def test_per_lesion_attribute_list_aligns_with_boxes(tmp_path: Path):
    _image(tmp_path / "a.png")
    row = {
        "path": "a.png",
        "organ": "breast",
        "boxes": [LESION_BOX, [70, 5, 90, 15]],
        "attributes": [{"shape": "Oval"}, {"shape": "Round"}],
        "confidence": {"shape": 1},
    }
    (item,) = iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", [row]))
    assert [a["attributes"] for a in item.annotations] == [{"shape": "Oval"}, {"shape": "Round"}]
    assert [a["confidence"] for a in item.annotations] == [{"shape": 1}, {"shape": 1}]


def test_attributes_without_boxes_give_one_boxless_lesion(tmp_path: Path):
    _image(tmp_path / "a.png")
    (item,) = iter_manifest_items(_write_csv(tmp_path / "m.csv", [{"path": "a.png", "attributes": {"shape": "Oval"}}]))
    assert item.error is None
    assert item.annotations == [{"box": None, "attributes": {"shape": "Oval"}, "confidence": {}, "origin": "manifest"}]


@pytest.mark.parametrize(
    "row",
    [
        {"path": "a.png", "boxes": "[[1, 2, 3"},  # bad JSON in a cell
        {"path": "a.png", "attributes": '["Oval"]'},  # a list of strings, not of attribute objects
        {"path": "a.png", "confidence": {"shape": 2}},  # c must be 0 or 1
        {"path": "a.png", "readers": ["r1"]},  # readers must be an object
        {"path": "a.png", "boxes": [LESION_BOX], "attributes": [{"shape": "Oval"}, {"shape": "Round"}]},  # 1 box, 2
        {"organ": "breast"},  # no path
    ],
)
def test_unparseable_csv_cells(tmp_path: Path, row: dict):
    _image(tmp_path / "a.png")
    rows = [row, {"path": "a.png", "organ": "breast"}]
    bad, good = iter_manifest_items(_write_csv(tmp_path / "m.csv", rows), organ="breast")
    assert bad.error == "manifest_row_unparseable" and good.error is None, "a bad row must not stop the file"
    assert bad.source_ref != good.source_ref  # the same image in two rows: two items


def test_unparseable_csv_row_with_extra_cells(tmp_path: Path):
    _image(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,organ\na.png,breast,surplus\na.png,breast\n")
    bad, good = iter_manifest_items(manifest)
    assert bad.error == "manifest_row_unparseable" and good.error is None


def test_unparseable_jsonl_lines(tmp_path: Path):
    _image(tmp_path / "a.png")
    lines = ["{not json", "[1, 2]", '"a string"', {"path": "a.png", "organ": "thyroid"}]
    items = list(iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", lines)))
    assert [i.error for i in items] == ["manifest_row_unparseable"] * 3 + [None]
    assert [i.source_ref for i in items][:3] == [f"m.jsonl:row={n}" for n in range(1, 4)]  # nothing else names them
    assert items[3].source_ref.startswith("m.jsonl:a.png#")


def test_image_missing(tmp_path: Path):
    (item,) = iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", [{"path": "gone.png", "organ": "liver"}]))
    assert item.error == "image_missing" and item.path == tmp_path / "gone.png"


@pytest.mark.parametrize(
    "boxes",
    [[[1, 2, 3]], [[1, 2, 3, "4"]], [1, 2, 3, 4], [[1, 2, 3, None]], [[1, 2, 3, True]], {"x": 1}, "[[1, 2, 3, NaN]]"],
)
def test_box_malformed(tmp_path: Path, boxes):
    _image(tmp_path / "a.png")
    (item,) = iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", [{"path": "a.png", "boxes": boxes}]))
    assert item.error == "box_malformed"


def test_reader_box_malformed(tmp_path: Path):
    _image(tmp_path / "a.png")
    row = {"path": "a.png", "readers": {"r1": {"box": [1, 2], "shape": "Oval"}}}
    (item,) = iter_manifest_items(_write_csv(tmp_path / "m.csv", [row]))
    assert item.error == "box_malformed"


def test_boxes_outside_the_image_and_unknown_organs_pass_on(tmp_path: Path):
    _image(tmp_path / "a.png")
    row = {"path": "a.png", "organ": "Kidney", "boxes": [[0, 0, 5000, 5000]]}
    (item,) = iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", [row]))
    assert item.error is None  # the core checks both, with the decoded size and the vocabularies
    assert item.organ == "kidney" and item.annotations[0]["box"] == [0.0, 0.0, 5000.0, 5000.0]


def test_other_file_types_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match=r"must be \.csv or \.jsonl"):
        iter_manifest_items(tmp_path / "m.xlsx")


def test_inserting_deleting_or_reordering_rows_changes_only_those_rows(tmp_path: Path):
    for name in ("a", "b", "c"):
        _image(tmp_path / f"{name}.png")
    rows = [{"path": "a.png", "organ": "breast"}, {"path": "b.png", "organ": "breast"}]
    before = {i.source_ref for i in iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", rows))}
    edited = [{"path": "c.png", "organ": "breast"}, rows[1], rows[0]]  # a row inserted on top, two swapped
    after = {i.source_ref for i in iter_manifest_items(_write_jsonl(tmp_path / "m.jsonl", edited))}
    assert before < after and len(after - before) == 1


def test_a_declared_id_column_names_the_row(tmp_path: Path):
    _image(tmp_path / "a.png")
    (item,) = iter_manifest_items(
        _write_jsonl(tmp_path / "m.jsonl", [{"id": "case-7", "path": "a.png", "organ": "breast"}])
    )
    assert item.source_ref == "m.jsonl:id=case-7"


def test_paths_outside_the_manifest_folder_are_quarantined_unless_allowed(tmp_path: Path):
    source, outside = tmp_path / "source", tmp_path / "outside"
    _image(outside / "x.png")
    _image(source / "in.png")
    (source / "link.png").symlink_to(outside / "x.png")
    rows = [
        {"path": "../outside/x.png", "organ": "breast"},
        {"path": str(outside / "x.png"), "organ": "breast"},
        {"path": "link.png", "organ": "breast"},
        {"path": "/etc/passwd", "organ": "breast"},
        {"path": "in.png", "organ": "breast"},
    ]
    manifest = _write_jsonl(source / "m.jsonl", rows)
    items = list(iter_manifest_items(manifest))
    assert [i.error for i in items] == ["outside_source"] * 4 + [None]
    assert all(i.path is None for i in items[:4])  # nothing outside is ever opened
    allowed = list(iter_manifest_items(manifest, extra_roots=[str(outside)]))
    assert [i.error for i in allowed] == [None, None, None, "outside_source", None]
