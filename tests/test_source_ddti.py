"""DDTI adapter: case XML + N_k.jpg images → boxes, canonical thyroid values, one patient per case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from flows.ingest.sources.ddti import DDTI_VALUES, ddti_value, iter_ddti_items
from schemas.records import SourceAnnotation
from schemas.vocabulary import normalize_value

SIZE = (96, 64)


def _ultrasound(path: Path) -> Path:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(20, 90, (SIZE[1], SIZE[0]), dtype=np.uint8), mode="L")
    ImageDraw.Draw(image).ellipse((30, 20, 60, 44), fill=40)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)
    return path


def _svg(*polygons: list[tuple[float, float]]) -> str:
    return json.dumps(
        [{"points": [{"x": x, "y": y} for x, y in polygon], "regionType": "freehand"} for polygon in polygons]
    )


def _case_xml(
    number: int,
    marks: list[tuple[str, str]],
    *,
    composition: str = "solid",
    echogenicity: str = "hypoechogenicity",
    margins: str = "well defined",
    calcifications: str = "microcalcifications",
) -> str:
    mark_xml = "".join(f"<mark><image>{k}</image><svg>{svg}</svg></mark>" for k, svg in marks)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><case><number>{number}</number><age>57</age><sex>F</sex>'
        f"<composition>{composition}</composition><echogenicity>{echogenicity}</echogenicity>"
        f"<margins>{margins}</margins><calcifications>{calcifications}</calcifications>"
        f"<tirads>4a</tirads>{mark_xml}</case>"
    )


def _canonical(attributes: dict[str, str]) -> dict[str, str]:
    return {name: normalize_value("thyroid", name, value) for name, value in attributes.items()}


# --------------------------------------------------------------------------- a good case
def test_case_gives_one_item_per_image_with_a_box_per_polygon(tmp_path: Path):
    _ultrasound(tmp_path / "12_1.jpg")
    _ultrasound(tmp_path / "12_2.jpg")
    two = _svg([(10, 12), (30, 10), (28, 30), (12, 28)], [(50, 40), (70, 40), (60, 55)])
    one = _svg([(-5, 5), (40, 5), (40, 70)])  # partly outside: clipped to the image
    (tmp_path / "12.xml").write_text(_case_xml(12, [("1", two), ("2", one)]))

    items = list(iter_ddti_items(tmp_path))

    assert [i.source_ref for i in items] == ["12_1.jpg", "12_2.jpg"]
    first, second = items
    assert {i.patient_id for i in items} == {"ddti-12"}
    assert all(i.source == "ddti" and i.organ == "thyroid" and i.error is None and i.image is None for i in items)
    assert first.path == tmp_path / "12_1.jpg"
    assert [a["box"] for a in first.annotations] == [[10.0, 10.0, 30.0, 30.0], [50.0, 40.0, 70.0, 55.0]]
    assert [a["box"] for a in second.annotations] == [[0.0, 5.0, 40.0, 64.0]]
    assert _canonical(first.annotations[0]["attributes"]) == {
        "composition": "Solid",
        "echogenicity": "Hypoechoic",
        "margin": "Smooth",
        "echogenic_foci": "Punctate echogenic foci",
    }
    assert first.metadata == {"tirads": "4a"}
    for item in items:  # age and sex never travel
        assert "57" not in repr(item.annotations) + repr(item.metadata) + repr(item.patient_id)
        for k, a in enumerate(item.annotations):
            assert a["origin"] == "outline"
            SourceAnnotation(
                image_id="0" * 64,
                organ="thyroid",
                lesion_index=k,
                origin=a["origin"],
                box=a["box"],
                attributes=a["attributes"],
                image_width=SIZE[0],
                image_height=SIZE[1],
            )


def test_image_without_a_mark_keeps_the_case_descriptors_without_a_box(tmp_path: Path):
    _ultrasound(tmp_path / "3_1.jpg")
    _ultrasound(tmp_path / "3_2.jpg")
    (tmp_path / "3.xml").write_text(_case_xml(3, [("1", _svg([(10, 10), (30, 10), (20, 30)]))]))

    _, unmarked = iter_ddti_items(tmp_path)

    assert unmarked.error is None and unmarked.patient_id == "ddti-3"
    assert [(a["box"], a["origin"]) for a in unmarked.annotations] == [(None, "metadata")]


def test_images_without_a_case_file_are_still_yielded(tmp_path: Path):
    _ultrasound(tmp_path / "sub" / "8_1.jpg")
    _ultrasound(tmp_path / "sub" / "thumbnail.jpg")

    items = list(iter_ddti_items(tmp_path))

    assert [(i.source_ref, i.patient_id, i.annotations) for i in items] == [
        ("sub/8_1.jpg", "ddti-8", []),
        ("sub/thumbnail.jpg", None, []),
    ]


# --------------------------------------------------------------------------- value mapping
@pytest.mark.parametrize(
    ("attribute", "raw", "canonical"),
    [
        ("composition", "solid", "Solid"),
        ("composition", "predominantly solid", "Mixed cystic and solid"),
        ("composition", "predominantly cystic", "Mixed cystic and solid"),
        ("composition", "spongiform", "Spongiform"),
        ("composition", "cystic", "Cystic"),
        ("echogenicity", "hyperechogenicity", "Hyperechoic or isoechoic"),
        ("echogenicity", "isoechogenicity ", "Hyperechoic or isoechoic"),  # DDTI has a trailing space here
        ("echogenicity", "hypoechogenicity", "Hypoechoic"),
        ("echogenicity", "marked hypoechogenicity", "Very hypoechoic"),
        ("margin", "well defined", "Smooth"),
        ("margin", "well defined smooth", "Smooth"),
        ("margin", "ill defined", "Ill-defined"),
        ("margin", "microlobulated", "Lobulated or irregular"),
        ("margin", "macrolobulated", "Lobulated or irregular"),
        ("margin", "spiculated", "Lobulated or irregular"),
        ("echogenic_foci", "non", "None"),
        ("echogenic_foci", "microcalcifications", "Punctate echogenic foci"),
        ("echogenic_foci", "macrocalcifications", "Macrocalcifications"),
        ("echogenic_foci", "Macrocalcification", "Macrocalcifications"),
    ],
)
def test_ddti_values_map_to_the_thyroid_vocabulary(attribute: str, raw: str, canonical: str):
    value = ddti_value(attribute, raw)
    assert value is not None and normalize_value("thyroid", attribute, value) == canonical


def test_every_mapped_value_is_already_canonical():
    for attribute, table in DDTI_VALUES.items():
        for value in filter(None, table.values()):
            assert normalize_value("thyroid", attribute, value) == value


def test_empty_and_undefined_values_are_omitted(tmp_path: Path):
    _ultrasound(tmp_path / "4_1.jpg")
    xml = _case_xml(4, [("1", _svg([(10, 10), (30, 10), (20, 30)]))], composition="dense", calcifications="")
    (tmp_path / "4.xml").write_text(xml)

    (item,) = iter_ddti_items(tmp_path)

    assert set(item.annotations[0]["attributes"]) == {"echogenicity", "margin"}


# --------------------------------------------------------------------------- reasons
def test_malformed_xml_quarantines_every_image_of_the_case(tmp_path: Path):
    _ultrasound(tmp_path / "5_1.jpg")
    _ultrasound(tmp_path / "5_2.jpg")
    (tmp_path / "5.xml").write_text("<case><number>5</number><mark>")  # cut off
    (tmp_path / "6.xml").write_text("<case><number>6</case>")  # no image found: the case itself is counted

    items = list(iter_ddti_items(tmp_path))

    assert [(i.source_ref, i.error) for i in items] == [
        ("5_1.jpg", "xml_unreadable"),
        ("5_2.jpg", "xml_unreadable"),
        ("6.xml", "xml_unreadable"),
    ]
    assert all(i.path is None and i.image is None for i in items)
    assert items[0].patient_id == items[1].patient_id == "ddti-5"


def test_xml_that_is_not_a_case_is_unreadable(tmp_path: Path):
    _ultrasound(tmp_path / "7_1.jpg")
    (tmp_path / "7.xml").write_text("<svg><number>7</number></svg>")

    (item,) = iter_ddti_items(tmp_path)

    assert item.error == "xml_unreadable"


@pytest.mark.parametrize(
    "svg",
    [
        "[{points: oops}]",  # not JSON
        "",  # a mark without an outline
        "[]",
        '{"points": []}',  # not a list of regions
        '[{"regionType": "freehand"}]',  # no points
        '[{"points": [{"x": 1, "y": 2}, {"x": "a", "y": 3}, {"x": 4, "y": 5}]}]',  # a coordinate that is text
        '[{"points": [{"x": 1, "y": 2}, {"x": NaN, "y": 3}, {"x": 4, "y": 5}]}]',
    ],
)
def test_bad_outline_is_quarantined(tmp_path: Path, svg: str):
    _ultrasound(tmp_path / "9_1.jpg")
    (tmp_path / "9.xml").write_text(_case_xml(9, [("1", svg)]))

    (item,) = iter_ddti_items(tmp_path)

    assert item.error == "outline_unreadable" and item.path is None and item.annotations == []


@pytest.mark.parametrize(
    "polygon",
    [
        [(10, 10), (30, 30)],  # two points
        [(10, 10), (30, 10), (50, 10)],  # a line
        [(200, 200), (220, 200), (210, 230)],  # wholly outside the image
    ],
)
def test_degenerate_outline_is_quarantined(tmp_path: Path, polygon: list[tuple[float, float]]):
    _ultrasound(tmp_path / "10_1.jpg")
    (tmp_path / "10.xml").write_text(_case_xml(10, [("1", _svg(polygon))]))

    (item,) = iter_ddti_items(tmp_path)

    assert item.error == "degenerate_outline" and item.path is None


def test_mark_for_a_missing_image_is_quarantined(tmp_path: Path):
    _ultrasound(tmp_path / "11_1.jpg")
    good = _svg([(10, 10), (30, 10), (20, 30)])
    (tmp_path / "11.xml").write_text(_case_xml(11, [("1", good), ("3", good)]))

    items = list(iter_ddti_items(tmp_path))

    assert [(i.source_ref, i.error) for i in items] == [("11_1.jpg", None), ("11_3.jpg", "image_missing")]
    assert items[1].path is None and items[1].patient_id == "ddti-11"


def test_mark_index_with_a_leading_zero_finds_its_image(tmp_path: Path):
    _ultrasound(tmp_path / "2_1.jpg")
    (tmp_path / "2.xml").write_text(_case_xml(2, [("01", _svg([(10, 10), (30, 10), (20, 30)]))]))

    (item,) = iter_ddti_items(tmp_path)

    assert item.error is None and [a["box"] for a in item.annotations] == [[10.0, 10.0, 30.0, 30.0]]
