import shutil

import numpy as np
import pytest
import yaml

from flows.ingest.sources.phantom import HEADER_HEIGHT, PhantomConfig, generate_case, iter_cases, phantom_items
from schemas.frames import iou
from schemas.vocabulary import DEFAULT_VOCAB_DIR, load_vocabulary


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_every_manifest_box_matches_its_mask():
    lesions = [lesion for case in iter_cases(seed=3, count=100) for lesion in case.lesions]
    assert len(lesions) >= 100
    worst = min(iou(lesion.box, _mask_box(lesion.mask)) for lesion in lesions)
    assert worst >= 0.9


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, b, c = generate_case(5, 7), generate_case(5, 7), generate_case(6, 7)
    assert a.image.tobytes() == b.image.tobytes() and a.lesions[0].box == b.lesions[0].box
    assert a.image.tobytes() != c.image.tobytes()


def test_attributes_come_from_the_vocabulary_and_organs_rotate():
    cases = list(iter_cases(seed=1, count=6))
    assert [c.organ for c in cases] == ["breast", "breast", "liver", "liver", "thyroid", "thyroid"]
    assert cases[0].patient_id == cases[1].patient_id != cases[2].patient_id
    for case in cases:
        vocabulary = load_vocabulary(case.organ)
        for lesion in case.lesions:
            assert set(lesion.attributes) == set(vocabulary.attributes)
            for name, value in lesion.attributes.items():
                assert value in vocabulary.attributes[name].values


def test_header_band_has_burned_in_text_and_lesions_lie_below_it():
    case = generate_case(0, 0)
    header = case.image[:HEADER_HEIGHT]
    assert (header > 150).sum() > 200, "the header must carry text for de-identification to remove"
    assert case.us_region == [0, HEADER_HEIGHT, case.image.shape[1], case.image.shape[0]]
    assert all(lesion.box[1] >= HEADER_HEIGHT for lesion in case.lesions)


def test_sector_field_of_view_is_black_outside_the_fan():
    image = generate_case(0, 1).image
    assert image[HEADER_HEIGHT + 5, 5] == 0 and image[-5, 5] == 0  # corners outside the fan
    assert image[HEADER_HEIGHT + 200, image.shape[1] // 2] > 0


def _lesion_contrast(difficulty: float) -> float:
    """|log(lesion mean / surrounding ring mean)| over several anechoic-ish liver lesions."""
    config = PhantomConfig(organs=("liver",), difficulty=difficulty, max_lesions=1)
    ratios = []
    for case in iter_cases(seed=11, count=12, config=config):
        lesion = case.lesions[0]
        x1, y1, x2, y2 = (int(v) for v in lesion.box)
        inner = case.image[y1:y2, x1:x2][lesion.mask[y1:y2, x1:x2]].mean()
        ring = case.image[max(0, y1 - 15) : y1 - 3, x1:x2].mean()
        if lesion.attributes["echogenicity"] != "Isoechoic":
            ratios.append(abs(np.log((inner + 1) / (ring + 1))))
    return float(np.mean(ratios))


def test_difficulty_lowers_lesion_contrast():
    assert _lesion_contrast(1.0) < 0.6 * _lesion_contrast(0.0)


def test_phantom_items_are_resumable(tmp_path):
    first = list(phantom_items(tmp_path, seed=2, count=3))
    folder = next(tmp_path.iterdir())
    (folder / "phantom-s2-000002.json").unlink()  # as if killed before the last case finished
    again = list(phantom_items(tmp_path, seed=2, count=3))
    assert [i.image.tobytes() for i in first] == [i.image.tobytes() for i in again]
    assert (folder / "manifest.jsonl").read_text().count("\n") == 4  # header + 3 cases


@pytest.mark.parametrize("organ", ["breast", "liver", "thyroid"])
def test_single_organ_config(organ):
    assert {c.organ for c in iter_cases(0, 3, PhantomConfig(organs=(organ,)))} == {organ}


def test_the_background_tissue_is_drawn_from_the_vocabulary_hints(tmp_path, monkeypatch):
    folder = tmp_path / "vocab"
    shutil.copytree(DEFAULT_VOCAB_DIR, folder)
    liver = yaml.safe_load((folder / "liver.yaml").read_text())
    shipped = generate_case(0, 0, PhantomConfig(organs=("liver",), max_lesions=1)).image
    liver["phantom"] = {"bands": {"levels": [{"above": 0.5, "echo": 0.04}]}}  # the deep half: anechoic
    (folder / "liver.yaml").write_text(yaml.safe_dump(liver))
    monkeypatch.setenv("LOOKCLOSER_VOCAB_DIR", str(folder))
    changed = generate_case(0, 0, PhantomConfig(organs=("liver",), max_lesions=1)).image
    us_height = changed.shape[0] - HEADER_HEIGHT
    deep, shallow = (
        slice(HEADER_HEIGHT + int(0.6 * us_height), None),
        slice(HEADER_HEIGHT, HEADER_HEIGHT + us_height // 3),
    )
    assert changed[deep].mean() < 0.5 * shipped[deep].mean()
    assert changed[shallow].mean() > 0.8 * shipped[shallow].mean()  # the hint's band only: the rest is tissue
