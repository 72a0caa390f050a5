import numpy as np
import pytest
from PIL import Image

from flows.ingest.decode import DecodeError, check_degenerate, decode_image_file
from tests.bad_files import speckle, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_corpus(folder)


def _outcome(path):
    try:
        image = decode_image_file(path)
    except DecodeError as err:
        return err.reason, None
    return check_degenerate(image), image


@pytest.mark.parametrize(
    "name",
    [
        "corrupt.png",
        "truncated.jpg",
        "zero.png",
        "text.png",
        "one_pixel.png",
        "huge_header.png",
        "blank.png",
        "deep16.png",
        "cmyk.jpg",
        "rgba.png",
        "palette.png",
        "exif_rotated.jpg",
    ],
)
def test_each_file_ends_with_its_reason_or_a_declared_mode(corpus, name):
    folder, expected = corpus
    reason, image = _outcome(folder / name)
    assert reason == expected[name]
    if reason is None:
        assert image.mode in ("L", "RGB")


def test_exif_orientation_is_applied(corpus):
    folder, _ = corpus
    assert decode_image_file(folder / "exif_rotated.jpg").size == (64, 96)  # stored 96×64, shown rotated


def test_deep_grayscale_is_windowed_not_clipped(corpus):
    folder, _ = corpus
    pixels = np.asarray(decode_image_file(folder / "deep16.png"))
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    assert np.corrcoef(pixels.ravel(), speckle(seed=1).ravel())[0, 1] > 0.99


def test_alpha_palette_and_cmyk_keep_the_picture(corpus):
    folder, _ = corpus
    for name, seed in (("rgba.png", 3), ("palette.png", 4), ("cmyk.jpg", 2)):
        gray = np.asarray(decode_image_file(folder / name).convert("L"), dtype=np.float64)
        assert np.corrcoef(gray.ravel(), speckle(seed=seed).ravel())[0, 1] > 0.9, name


def test_missing_file_is_a_reason_not_a_crash(tmp_path):
    with pytest.raises(DecodeError) as err:
        decode_image_file(tmp_path / "gone.png")
    assert err.value.reason == "file_unreadable"


def test_degenerate_checks():
    assert check_degenerate(Image.new("L", (27, 200), 0)) == "image_too_small"
    assert check_degenerate(Image.new("L", (100, 100), 90)) == "near_constant_image"
    assert check_degenerate(Image.fromarray(speckle())) is None
