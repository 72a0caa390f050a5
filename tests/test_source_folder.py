"""Folder adapter: BUSI, TN3K, BrEaST and plain layouts from tiny fixtures, and one test per reason."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook
from PIL import Image, ImageDraw

from flows.ingest.sources.folder import breast_attribute_value, detect_layout, iter_folder_items
from schemas.records import SourceAnnotation
from schemas.vocabulary import normalize_value

SIZE = (96, 64)


def _ultrasound(path: Path, size: tuple[int, int] = SIZE, fmt: str | None = None, **save: object) -> Path:
    """Speckle-like background with one bright lesion, so the decoder would accept it."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(20, 90, (size[1], size[0]), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="L")
    ImageDraw.Draw(image).ellipse((30, 20, 60, 44), fill=220)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **save)
    return path


def _mask(path: Path, rectangles: list[tuple[int, int, int, int]], size: tuple[int, int] = SIZE) -> Path:
    """A 0/255 mask with filled rectangles (PIL includes both corners: box = x1, y1, x2 + 1, y2 + 1)."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for rect in rectangles:
        draw.rectangle(rect, fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask.save(path)
    return path


def _boxes(item) -> list[list[float]]:
    return [a["box"] for a in item.annotations]


def _schema_check(item) -> None:
    """The annotations pass the core's own schema (boxes inside the image, vocabulary values)."""
    for k, a in enumerate(item.annotations):
        SourceAnnotation(
            image_id="0" * 64,
            organ=item.organ,
            lesion_index=k,
            origin=a["origin"],
            box=a["box"],
            attributes=a["attributes"],
            image_width=SIZE[0],
            image_height=SIZE[1],
        )


# --------------------------------------------------------------------------- BUSI
def test_busi_layout_pairs_masks_and_reads_the_class_folder(tmp_path: Path):
    _ultrasound(tmp_path / "benign" / "benign (1).png")
    _mask(tmp_path / "benign" / "benign (1)_mask.png", [(50, 10, 69, 29)])
    _mask(tmp_path / "benign" / "benign (1)_mask_1.png", [(5, 40, 19, 55)])  # a second lesion, own mask
    _ultrasound(tmp_path / "normal" / "normal (1).png")
    _mask(tmp_path / "normal" / "normal (1)_mask.png", [])  # normal cases: all-zero mask

    items = list(iter_folder_items(tmp_path, layout="busi"))

    assert [i.source_ref for i in items] == ["benign/benign (1).png", "normal/normal (1).png"]
    benign, normal = items
    assert benign.source == "folder" and benign.organ == "breast" and benign.error is None
    assert benign.path == tmp_path / "benign" / "benign (1).png" and benign.image is None
    assert _boxes(benign) == [[5.0, 40.0, 20.0, 56.0], [50.0, 10.0, 70.0, 30.0]]  # both masks, left to right
    assert all(a["origin"] == "mask" and a["attributes"] == {} for a in benign.annotations)
    assert benign.metadata == {"class": "benign"} and normal.metadata == {"class": "normal"}
    assert normal.annotations == [] and normal.error is None and normal.path is not None
    _schema_check(benign)


def test_mask_with_three_lesions_gives_three_boxes(tmp_path: Path):
    _ultrasound(tmp_path / "malignant" / "malignant (7).png")
    _mask(tmp_path / "malignant" / "malignant (7)_mask.png", [(60, 5, 79, 19), (2, 2, 11, 11), (30, 40, 44, 59)])

    (item,) = iter_folder_items(tmp_path, layout="busi")

    assert _boxes(item) == [[2.0, 2.0, 12.0, 12.0], [30.0, 40.0, 45.0, 60.0], [60.0, 5.0, 80.0, 20.0]]
    assert item.metadata == {"class": "malignant"}


def test_rgb_mask_works_like_a_gray_one(tmp_path: Path):
    _ultrasound(tmp_path / "benign" / "benign (2).png")
    mask = Image.new("RGB", SIZE, (0, 0, 0))
    ImageDraw.Draw(mask).rectangle((10, 10, 29, 29), fill=(255, 255, 255))
    mask.save(tmp_path / "benign" / "benign (2)_mask.png")

    (item,) = iter_folder_items(tmp_path, layout="busi")

    assert _boxes(item) == [[10.0, 10.0, 30.0, 30.0]]


# --------------------------------------------------------------------------- TN3K
def test_tn3k_layout_pairs_split_image_and_mask_folders(tmp_path: Path):
    _ultrasound(tmp_path / "trainval-image" / "0001.jpg", quality=95)
    _ultrasound(tmp_path / "test-image" / "0001.jpg", quality=95)
    jpeg_mask = Image.new("L", SIZE, 0)
    ImageDraw.Draw(jpeg_mask).rectangle((20, 10, 59, 39), fill=255)
    (tmp_path / "trainval-mask").mkdir()
    jpeg_mask.save(tmp_path / "trainval-mask" / "0001.jpg", quality=90)  # TN3K masks are lossy JPEGs
    _mask(tmp_path / "test-mask" / "0001.jpg", [])

    items = list(iter_folder_items(tmp_path))  # auto

    assert [i.source_ref for i in items] == ["test-image/0001.jpg", "trainval-image/0001.jpg"]
    test, trainval = items
    assert {i.organ for i in items} == {"thyroid"}
    assert test.annotations == []
    (box,) = _boxes(trainval)
    assert np.allclose(box, [20, 10, 60, 40], atol=1)  # JPEG ringing may move an edge by a pixel
    _schema_check(trainval)


# --------------------------------------------------------------------------- BrEaST-Lesions-USG
def _breast_workbook(path: Path, rows: list[list[object]]) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(
        [
            "CaseID",
            "Image_filename",
            "Mask_tumor_filename",
            "Age",
            "Shape",
            "Margin",
            "Echogenicity",
            "Posterior_features",
            "Halo",
            "Calcifications",
            "BIRADS",
            "Classification",
        ]
    )
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def test_breast_layout_reads_masks_and_clinical_descriptors(tmp_path: Path):
    folder = tmp_path / "BrEaST-Lesions_USG-images_and_masks"
    _ultrasound(folder / "case001.png")
    _mask(folder / "case001_tumor.png", [(30, 20, 59, 43)])
    _mask(folder / "case001_other1.png", [(0, 0, 15, 15)])  # not a tumour: ignored
    _ultrasound(folder / "case002.png")  # a normal case: no tumour mask
    _ultrasound(folder / "case003.png")
    _mask(folder / "case003_tumor.png", [(10, 10, 29, 29)])
    _breast_workbook(
        tmp_path / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx",
        [
            [
                1,
                "case001.png",
                "case001_tumor.png",
                67,
                "irregular",
                "not circumscribed - angular&indistinct",
                "complex cystic/solid",
                "no",
                "no",
                "not applicable",
                "4c",
                "malignant",
            ],
            [
                2,
                "case002.png",
                None,
                45,
                "not applicable",
                "not applicable",
                "not applicable",
                None,
                None,
                None,
                1,
                "normal",
            ],
            [3, None, None, 31, "oval", "circumscribed", "hypoechoic", "enhancement", "no", "no", 3.0, "benign"],
        ],
    )

    items = list(iter_folder_items(tmp_path))  # auto

    assert [i.source_ref for i in items] == [f"BrEaST-Lesions_USG-images_and_masks/case00{n}.png" for n in (1, 2, 3)]
    case1, case2, case3 = items
    assert case1.organ == "breast" and _boxes(case1) == [[30.0, 20.0, 60.0, 44.0]]
    attributes = case1.annotations[0]["attributes"]
    canonical = {name: normalize_value("breast", name, value) for name, value in attributes.items()}
    assert canonical == {
        "shape": "Irregular",
        "margin": "Angular",  # the most suspicious of the two descriptors
        "echo_pattern": "Complex cystic and solid",
        "posterior_features": "No posterior features",
    }  # calcifications "not applicable": omitted
    assert case1.metadata == {"class": "malignant", "birads": "4c"}
    assert case2.annotations == [] and case2.metadata == {"class": "normal", "birads": "1"}
    # case003 has no file name in the sheet: matched by its CaseID
    assert {normalize_value("breast", k, v) for k, v in case3.annotations[0]["attributes"].items()} == {
        "Oval",
        "Circumscribed",
        "Hypoechoic",
        "Enhancement",
        "None",
    }
    assert case3.metadata["birads"] == "3"
    for item in items:  # the patient's age never travels
        assert "age" not in item.metadata and all("age" not in a["attributes"] for a in item.annotations)
        assert "67" not in repr(item.annotations) + repr(item.metadata)
        _schema_check(item)


@pytest.mark.parametrize(
    ("attribute", "raw", "canonical"),
    [
        ("shape", "oval", "Oval"),
        ("shape", "round", "Round"),
        ("shape", "irregular", "Irregular"),
        ("margin", "circumscribed", "Circumscribed"),
        ("margin", "not circumscribed - angular", "Angular"),
        ("margin", "not circumscribed - indistinct", "Indistinct"),
        ("margin", "not circumscribed - microlobulated", "Microlobulated"),
        ("margin", "not circumscribed - spiculated", "Spiculated"),
        ("margin", "not circumscribed - microlobulated&indistinct", "Microlobulated"),
        ("margin", "not circumscribed - spiculated&angular&microlobulated&indistinct", "Spiculated"),
        ("echo_pattern", "anechoic", "Anechoic"),
        ("echo_pattern", "hypoechoic", "Hypoechoic"),
        ("echo_pattern", "isoechoic", "Isoechoic"),
        ("echo_pattern", "hyperechoic", "Hyperechoic"),
        ("echo_pattern", "heterogeneous", "Heterogeneous"),
        ("echo_pattern", "complex cystic/solid", "Complex cystic and solid"),
        ("posterior_features", "no", "No posterior features"),
        ("posterior_features", "enhancement", "Enhancement"),
        ("posterior_features", "shadowing", "Shadowing"),
        ("posterior_features", "combined", "Combined pattern"),
        ("calcifications", "no", "None"),
        ("calcifications", "in a mass", "In a mass"),
        ("calcifications", "intraductal", "Intraductal"),
    ],
)
def test_breast_values_map_to_the_vocabulary(attribute: str, raw: str, canonical: str):
    value = breast_attribute_value(attribute, raw)
    assert value is not None and normalize_value("breast", attribute, value) == canonical


@pytest.mark.parametrize("raw", [None, float("nan"), "", "  ", "NaN", "not applicable", "Not Applicable "])
def test_missing_breast_values_are_omitted(raw: object):
    assert breast_attribute_value("shape", raw) is None


def test_indefinable_calcifications_are_omitted_not_guessed():
    assert breast_attribute_value("calcifications", "indefinable") is None


# --------------------------------------------------------------------------- plain
def test_plain_layout_needs_an_organ_and_yields_images_without_annotations(tmp_path: Path):
    _ultrasound(tmp_path / "a" / "scan 1.png")
    _ultrasound(tmp_path / "b.jpg", fmt="JPEG")
    (tmp_path / "notes.txt").write_text("not an image")

    with pytest.raises(ValueError, match="organ"):
        iter_folder_items(tmp_path, layout="plain")
    with pytest.raises(ValueError, match="organ"):
        list(iter_folder_items(tmp_path))  # auto finds no known layout

    items = list(iter_folder_items(tmp_path, organ="liver"))
    images, unlisted = items[:2], items[2:]
    assert [i.source_ref for i in images] == ["b.jpg", "a/scan 1.png"]  # a folder's files before its subfolders
    assert all(i.organ == "liver" and i.annotations == [] and i.path and i.path.is_file() for i in images)
    assert [(i.source_ref, i.error) for i in unlisted] == [("notes.txt", "unsupported_format")]  # never skipped


def test_unknown_layout_and_missing_root_raise_at_once(tmp_path: Path):
    with pytest.raises(ValueError, match="layout"):
        iter_folder_items(tmp_path, layout="kaggle")
    with pytest.raises(NotADirectoryError):
        iter_folder_items(tmp_path / "absent", organ="breast")


@pytest.mark.parametrize(
    ("names", "layout"),
    [
        (["benign/benign (1).png", "benign/benign (1)_mask.png"], "busi"),
        (["case001.png", "case001_tumor.png", "clinical.xlsx"], "breast"),
        (["test-image/1.jpg", "test-mask/1.jpg"], "tn3k"),
        (["x/1.png", "y/2.jpg"], "plain"),
    ],
)
def test_auto_detects_the_layout_from_file_names(names: list[str], layout: str):
    assert detect_layout([Path(n) for n in names]) == layout


# --------------------------------------------------------------------------- reasons
def test_mask_of_another_size_is_quarantined(tmp_path: Path):
    _ultrasound(tmp_path / "benign" / "benign (3).png")
    _mask(tmp_path / "benign" / "benign (3)_mask.png", [(5, 5, 20, 20)], size=(48, 32))

    (item,) = iter_folder_items(tmp_path, layout="busi")

    assert item.error == "mask_size_mismatch"
    assert item.path is None and item.image is None and item.annotations == []
    assert item.source_ref == "benign/benign (3).png"


def test_unreadable_mask_is_quarantined(tmp_path: Path):
    _ultrasound(tmp_path / "benign" / "benign (4).png")
    (tmp_path / "benign" / "benign (4)_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    (item,) = iter_folder_items(tmp_path, layout="busi")

    assert item.error == "mask_unreadable" and item.path is None


def test_missing_mask_is_quarantined_in_a_mask_layout(tmp_path: Path):
    _ultrasound(tmp_path / "test-image" / "5.jpg", fmt="JPEG")
    (tmp_path / "test-mask").mkdir()

    (item,) = iter_folder_items(tmp_path, layout="tn3k")

    assert item.error == "mask_missing" and item.path is None


def test_unreadable_image_is_left_to_the_decoder(tmp_path: Path):
    (tmp_path / "benign").mkdir()
    (tmp_path / "benign" / "benign (5).png").write_bytes(b"definitely not a png")
    _mask(tmp_path / "benign" / "benign (5)_mask.png", [(5, 5, 20, 20)])

    (item,) = iter_folder_items(tmp_path, layout="busi")

    # the core quarantines it with the decoder's own reason (not_an_image), so the adapter hands the path on
    assert item.error is None and item.path == tmp_path / "benign" / "benign (5).png" and item.annotations == []


def test_unreadable_spreadsheet_quarantines_the_breast_images(tmp_path: Path):
    _ultrasound(tmp_path / "case001.png")
    _mask(tmp_path / "case001_tumor.png", [(5, 5, 20, 20)])
    (tmp_path / "clinical.xlsx").write_bytes(b"PK\x03\x04 not really a zip")

    (item,) = iter_folder_items(tmp_path, layout="breast")

    assert item.error == "spreadsheet_unreadable" and item.path is None


# --------------------------------------------------------------------------- file-system oddities
def test_exif_rotated_image_is_measured_as_the_decoder_orients_it(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: the decoder turns the 96×64 frame into 64×96
    _ultrasound(tmp_path / "benign" / "benign (6).jpg", fmt="JPEG", exif=exif)
    _mask(tmp_path / "benign" / "benign (6)_mask.png", [(10, 20, 29, 69)], size=(64, 96))

    (item,) = iter_folder_items(tmp_path, layout="busi")

    assert item.error is None and _boxes(item) == [[10.0, 20.0, 30.0, 70.0]]


def test_symlink_loop_does_not_hang_or_repeat(tmp_path: Path):
    _ultrasound(tmp_path / "benign" / "benign (1).png")
    _mask(tmp_path / "benign" / "benign (1)_mask.png", [(5, 5, 20, 20)])
    try:
        os.symlink(tmp_path, tmp_path / "benign" / "loop", target_is_directory=True)
    except OSError:
        pytest.skip("the file system refuses symlinks")

    items = list(iter_folder_items(tmp_path))

    assert [(i.source_ref, i.error) for i in items] == [
        ("benign/benign (1).png", None),
        ("benign/loop", "not_a_regular_file"),  # a folder link is not followed, but accounted for
    ]


def test_non_utf8_file_name_is_handled(tmp_path: Path):
    folder = os.path.join(os.fsencode(tmp_path), b"benign")
    os.mkdir(folder)
    name = b"caf\xe9 (1)"  # Latin-1, not valid UTF-8
    try:
        image_path = os.path.join(folder, name + b".png")
        _ultrasound(Path(os.fsdecode(image_path)))
        _mask(Path(os.fsdecode(os.path.join(folder, name + b"_mask.png"))), [(5, 5, 20, 20)])
    except (OSError, UnicodeError):
        pytest.skip("the file system refuses non-UTF-8 names")

    (item,) = iter_folder_items(tmp_path)

    assert item.error is None and _boxes(item) == [[5.0, 5.0, 21.0, 21.0]]
    assert item.path is not None and os.fsencode(item.path) == image_path
    # what ingest hashes: the original bytes survive the surrogate escapes
    assert item.source_ref.encode("utf-8", "surrogateescape") == b"benign/" + name + b".png"


def test_hidden_and_lock_files_are_not_images(tmp_path: Path):
    _ultrasound(tmp_path / "x.png")
    (tmp_path / "._x.png").write_bytes(b"AppleDouble")  # macOS litter next to every copied file
    (tmp_path / ".hidden").mkdir()
    _ultrasound(tmp_path / ".hidden" / "y.png")

    items = list(iter_folder_items(tmp_path, organ="breast"))

    assert [i.source_ref for i in items] == ["x.png"]
