import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from schemas.crop import MIN_CROP_SIDE, CropError, crop, crop_box

coordinate = st.floats(min_value=-500, max_value=3000, allow_nan=False, allow_infinity=False)


@given(
    st.integers(28, 1200),
    st.integers(28, 1200),
    st.lists(coordinate, min_size=4, max_size=4),
    st.sampled_from([0.0, 0.1, 0.6]),
)
def test_crop_is_never_empty_never_outside_and_at_least_28(width, height, bbox, padding):
    try:
        left, top, right, bottom = crop_box(bbox, (width, height), padding=padding)
    except CropError as err:
        assert "aspect ratio" in str(err)
        return
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    assert right - left >= MIN_CROP_SIDE and bottom - top >= MIN_CROP_SIDE
    assert crop_box(bbox, (width, height), padding=padding) == (left, top, right, bottom)  # deterministic


def test_crop_image_equals_box_and_is_deterministic():
    image = Image.effect_noise((200, 120), 40).convert("L")
    first, box = crop(image, [150, 100, 20, 10])  # corners given in the wrong order
    second, box2 = crop(image, [150, 100, 20, 10])
    assert box == box2 == [20, 10, 150, 100]
    assert first.size == (130, 90) and first.tobytes() == second.tobytes()


def test_small_box_grows_around_its_centre_and_shifts_inside_at_the_border():
    assert crop_box([50, 50, 52, 52], (200, 200)) == (37, 37, 65, 65)
    assert crop_box([0, 0, 2, 2], (200, 200)) == (0, 0, 28, 28)
    assert crop_box([199, 199, 200, 200], (200, 200)) == (172, 172, 200, 200)


def test_box_outside_the_image_is_clamped():
    assert crop_box([-50, -50, 500, 500], (100, 80)) == (0, 0, 100, 80)


def test_padding_grows_the_box():
    assert crop_box([40, 40, 80, 80], (200, 200), padding=0.25) == (30, 30, 90, 90)


def test_aspect_ratio_above_100_is_rejected():
    with pytest.raises(CropError, match="aspect ratio"):
        crop_box([0, 0, 5000, 1], (6000, 3000))


@pytest.mark.parametrize("bbox", [[1, 2, 3], [0, 0, float("nan"), 4]])
def test_malformed_box_is_rejected(bbox):
    with pytest.raises(CropError):
        crop_box(bbox, (100, 100))
