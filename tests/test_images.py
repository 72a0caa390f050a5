import io

from PIL import Image, ImageFilter

from flows.ingest.identity import assign_split, hamming, image_id, patient_key, phash


def _image(seed=0):
    return Image.effect_noise((96, 64), 30 + seed).filter(ImageFilter.GaussianBlur(2)).convert("L")


def test_image_id_is_about_pixels_not_the_file():
    image = _image()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=9)
    reloaded = Image.open(io.BytesIO(buffer.getvalue()))
    assert image_id(reloaded) == image_id(image)
    assert image_id(image.convert("RGB")) != image_id(image)  # the mode is part of the identity


def test_phash_near_duplicates_are_close_and_different_images_far():
    image = _image()
    brighter = image.point(lambda v: min(255, v + 8))
    other = Image.effect_noise((96, 64), 60).convert("L")
    assert len(phash(image)) == 16
    assert hamming(phash(image), phash(brighter)) <= 6
    assert hamming(phash(image), phash(other)) > 12


def test_patient_key_is_salted_and_image_only_keys_are_per_image():
    assert patient_key(b"s1", "P1", "img") == patient_key(b"s1", "P1", "other-img")
    assert patient_key(b"s1", "P1", "img") != patient_key(b"s2", "P1", "img")
    assert "P1" not in patient_key(b"s1", "P1", "img")
    assert patient_key(b"s1", None, "a") != patient_key(b"s1", None, "b")


def test_split_is_by_patient_and_thyroid_is_test_only():
    keys = [patient_key(b"salt", f"P{i}", "x") for i in range(400)]
    splits = [assign_split(k, "breast", test_fraction=0.25, test_only_organs=("thyroid",)) for k in keys]
    assert 0.15 < splits.count("test") / len(splits) < 0.35
    assert {assign_split(k, "thyroid", test_fraction=0.25, test_only_organs=("thyroid",)) for k in keys} == {"test"}
