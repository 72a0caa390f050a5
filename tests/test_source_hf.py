import io
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from flows.ingest.sources.hf import iter_hf_items
from schemas.vocabulary import normalize_value

LESION_BOX = [30.0, 20.0, 60.0, 44.0]
COLUMNS = {
    "organ": "organ",
    "patient_id": "patient",
    "boxes": "boxes",
    "attributes": "attrs",
    "attribute:echo": "echo",  # an answer key works as well as the attribute name
    "attribute:margin": "margin",
}
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "organ": datasets.Value("string"),
        "patient": datasets.Value("string"),
        "boxes": datasets.List(datasets.List(datasets.Value("float32"))),
        "echo": datasets.Value("string"),
        "margin": datasets.ClassLabel(names=["Circumscribed", "Indistinct"]),
        "attrs": {"shape": datasets.Value("string")},
    }
)


def _png(dtype: type = np.uint8) -> bytes:
    pixels = np.full((64, 96), 60, dtype=dtype)
    pixels[20:44, 30:60] = 220 if dtype == np.uint8 else 50_000  # a bright lesion
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _dataset() -> datasets.Dataset:
    rows = [
        {"image": _png(), "organ": "Breast", "patient": "P1", "boxes": [LESION_BOX], "echo": "LowEcho", "margin": 1},
        {"image": b"this is not an image", "organ": "liver", "patient": "P2", "boxes": [], "echo": None, "margin": 0},
        {"image": _png(np.uint16), "organ": None, "patient": None, "boxes": [], "echo": None, "margin": 0},
        {"image": _png(), "organ": "breast", "patient": "P3", "boxes": [[1.0, 2.0, 3.0]], "echo": None, "margin": 0},
    ]
    table = {key: [row[key] for row in rows] for key in rows[0]}
    table["image"] = [{"bytes": data, "path": None} for data in table["image"]]
    table["attrs"] = [{"shape": "Oval"}, {"shape": None}, {"shape": None}, {"shape": None}]
    return datasets.Dataset.from_dict(table, features=FEATURES)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved")
    _dataset().save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def hub_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hub")
    (folder / "data").mkdir()
    _dataset().to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def _summary(item) -> tuple:
    image = None if item.image is None else (item.image.mode, item.image.size, item.image.tobytes())
    return item.source_ref, item.organ, item.patient_id, item.annotations, item.error, image


def test_saved_folder_and_parquet_give_the_same_items(saved: Path, hub_layout: Path):
    from_disk = [_summary(i) for i in iter_hf_items(str(saved), organ="thyroid", columns=COLUMNS)]
    from_parquet = [_summary(i) for i in iter_hf_items(str(hub_layout), organ="thyroid", columns=COLUMNS)]
    assert from_disk == from_parquet
    assert [s[0] for s in from_disk] == ["train:0", "train:1", "train:2", "train:3"]
    one_file = hub_layout / "data" / "train-00000-of-00001.parquet"
    assert [_summary(i) for i in iter_hf_items(str(one_file), organ="thyroid", columns=COLUMNS)] == from_parquet


def test_columns_become_annotations(saved: Path):
    first = next(iter_hf_items(str(saved), columns=COLUMNS))
    assert first.source == "hf" and first.organ == "breast" and first.patient_id == "P1" and first.error is None
    assert first.path is None and first.image is not None
    assert first.image.mode == "L" and first.image.size == (96, 64)
    assert first.annotations == [
        {
            "box": LESION_BOX,
            "attributes": {"shape": "Oval", "echo_pattern": "LowEcho", "margin": "Indistinct"},  # ClassLabel → name
            "confidence": {},
            "origin": "hf",
        }
    ]


def test_attribute_values_normalise_through_the_vocabulary(saved: Path):
    first = next(iter_hf_items(str(saved), columns=COLUMNS))
    canonical = {
        name: normalize_value("breast", name, value) for name, value in first.annotations[0]["attributes"].items()
    }
    assert canonical == {"shape": "Oval", "echo_pattern": "Hypoechoic", "margin": "Indistinct"}


def test_corrupt_cell_is_one_item_and_iteration_goes_on(saved: Path):
    items = list(iter_hf_items(str(saved), columns=COLUMNS))
    assert items[1].error == "not_an_image" and items[1].image is None and items[1].organ == "liver"
    assert len(items) == 4 and items[2].error is None


def test_deep_grayscale_is_windowed_and_the_organ_defaults(saved: Path):
    third = list(iter_hf_items(str(saved), organ="thyroid", columns=COLUMNS))[2]
    assert third.organ == "thyroid" and third.patient_id is None
    assert [a["box"] for a in third.annotations] == [None]  # no boxes: one box-less lesion with the row's labels
    assert third.image is not None and third.image.mode == "L"
    assert np.asarray(third.image).max() == 255  # the 16-bit lesion is windowed to 8 bits, not truncated


def test_box_malformed(saved: Path):
    assert list(iter_hf_items(str(saved), columns=COLUMNS))[3].error == "box_malformed"


def test_one_box_column(tmp_path: Path):
    table = {"image": [{"bytes": _png(), "path": None}], "lesion": [LESION_BOX]}
    datasets.Dataset.from_dict(
        table,
        features=datasets.Features(
            {"image": datasets.Image(), "lesion": datasets.List(datasets.Value("float32"), length=4)}
        ),
    ).save_to_disk(str(tmp_path / "ds"))
    (item,) = iter_hf_items(str(tmp_path / "ds"), organ="liver", columns={"box": "lesion"})
    assert item.annotations == [{"box": LESION_BOX, "attributes": {}, "confidence": {}, "origin": "hf"}]


def test_splits_of_a_dataset_dict(tmp_path: Path):
    whole = _dataset()
    datasets.DatasetDict({"train": whole.select([0]), "test": whole.select([0, 2])}).save_to_disk(str(tmp_path / "dd"))
    refs = [item.source_ref for item in iter_hf_items(str(tmp_path / "dd"), organ="breast")]
    assert refs == ["train:0", "test:0", "test:1"]
    assert [i.source_ref for i in iter_hf_items(str(tmp_path / "dd"), split="test")] == ["test:0", "test:1"]
    with pytest.raises(ValueError, match="split"):
        list(iter_hf_items(str(tmp_path / "dd"), split="validation"))


def test_path_cells_are_left_to_the_core_decoder(tmp_path: Path):
    (tmp_path / "ds" / "imgs").mkdir(parents=True)
    (tmp_path / "ds" / "imgs" / "a.png").write_bytes(_png())
    datasets.Dataset.from_dict({"file": ["imgs/a.png", "imgs/gone.png"]}).to_parquet(
        str(tmp_path / "ds" / "rows.parquet")
    )
    found, gone = iter_hf_items(str(tmp_path / "ds"), organ="breast", image_column="file")
    assert found.path == tmp_path / "ds" / "imgs" / "a.png" and found.image is None and found.error is None
    assert gone.error == "image_missing"


def test_unknown_field_in_columns_is_refused_at_once():
    with pytest.raises(ValueError, match="unknown field"):
        iter_hf_items("anything", columns={"echo": "echo"})


def test_a_column_the_dataset_lacks_is_refused(saved: Path):
    with pytest.raises(ValueError, match="not in the dataset"):
        list(iter_hf_items(str(saved), columns={"organ": "organ_name"}))


def test_unreadable_local_folder(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (item,) = iter_hf_items(str(tmp_path / "empty"), organ="liver")
    assert item.error == "hf_dataset_unreadable" and item.organ == "liver"


@pytest.mark.timeout(120)  # a guard against a hang, not a timing
def test_unreachable_repo_id_offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (item,) = iter_hf_items("lookcloser-tests/no-such-dataset", organ="breast", revision="v1.0")
    assert item.source == "hf" and item.error == "hf_dataset_unreachable" and item.image is None


def test_repo_id_loads_the_fetched_snapshot_and_offline_stays_local(monkeypatch: pytest.MonkeyPatch, saved: Path):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id: str, **kwargs) -> str:
        calls.append((repo_id, kwargs))
        return str(saved)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    items = list(iter_hf_items("org/ultrasound", revision="v1.0", columns=COLUMNS))
    assert [i.source_ref for i in items] == ["train:0", "train:1", "train:2", "train:3"]
    ((repo_id, kwargs),) = calls
    assert repo_id == "org/ultrasound" and kwargs["repo_type"] == "dataset" and kwargs["revision"] == "v1.0"
    assert kwargs["local_files_only"] is True  # HF_HUB_OFFLINE is honoured at call time, not only at import

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    list(iter_hf_items("org/ultrasound"))
    assert calls[1][1]["local_files_only"] is False and calls[1][1]["etag_timeout"] == 3.0


def test_image_paths_outside_the_dataset_are_not_opened(tmp_path):
    from flows.ingest.sources.hf import image_from_cell

    (tmp_path / "data").mkdir()
    outside = tmp_path / "secret.png"
    Image.new("L", (64, 64), 9).save(outside)
    (tmp_path / "data" / "link.png").symlink_to(outside)
    for cell in ("../secret.png", str(outside), "link.png", {"bytes": None, "path": "/etc/passwd"}):
        assert image_from_cell(cell, tmp_path / "data") == (None, None, "outside_source")
