import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.frames import (
    PATCH_FACTOR,
    iou,
    model_size,
    percent_to_pixels,
    pixels_to_percent,
    smart_resize,
    to_model_box,
    to_original_box,
    validate_box,
)

sizes = st.integers(min_value=28, max_value=2400)


@st.composite
def image_and_box(draw):
    width, height = draw(sizes), draw(sizes)
    x1 = draw(st.floats(0, width - 1, allow_nan=False))
    y1 = draw(st.floats(0, height - 1, allow_nan=False))
    x2 = draw(st.floats(x1 + 0.5, width, allow_nan=False).filter(lambda v: v > x1))
    y2 = draw(st.floats(y1 + 0.5, height, allow_nan=False).filter(lambda v: v > y1))
    return (width, height), [x1, y1, x2, y2]


@pytest.mark.parametrize(
    ("height", "width", "max_pixels", "expected"),
    [  # values seen from transformers' own processor (research/training.md §5)
        (300, 400, 224 * 224, (168, 252)),
        (1200, 640, 224 * 224, (280, 140)),
        (70, 90, 224 * 224, (56, 84)),
    ],
)
def test_smart_resize_matches_transformers(height, width, max_pixels, expected):
    assert smart_resize(height, width, min_pixels=3136, max_pixels=max_pixels) == expected


@given(sizes, sizes)
def test_smart_resize_is_a_patch_multiple_inside_the_budget(width, height):
    w2, h2 = model_size(width, height)
    assert w2 % PATCH_FACTOR == 0 and h2 % PATCH_FACTOR == 0
    assert 4 * 28 * 28 <= w2 * h2 <= 16384 * 28 * 28


def test_smart_resize_rejects_extreme_aspect():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 3000)


@given(image_and_box())
def test_original_model_original_within_one_model_pixel(case):
    (width, height), box = case
    frame = model_size(width, height)
    bbox_2d = to_model_box(box, (width, height), frame)
    assert 0 <= bbox_2d[0] < bbox_2d[2] <= frame[0] and 0 <= bbox_2d[1] < bbox_2d[3] <= frame[1]
    back = to_original_box(bbox_2d, (width, height), frame)
    one_px_x, one_px_y = width / frame[0], height / frame[1]  # one model-frame pixel, in original pixels
    for axis, (orig, restored) in enumerate(zip(box, back, strict=True)):
        tolerance = one_px_x if axis % 2 == 0 else one_px_y
        assert abs(orig - restored) <= tolerance + 1e-9


@given(image_and_box())
def test_label_studio_percent_round_trip(case):
    (width, height), box = case
    value = pixels_to_percent(box, width, height)
    back = percent_to_pixels(**value, original_width=width, original_height=height)
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(box, back, strict=True))


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([10, 10, 10, 20], "empty or inverted"),
        ([30, 10, 20, 20], "empty or inverted"),
        ([-1, 10, 20, 20], "outside the image 100x50"),
        ([10, 10, 101, 20], "outside the image 100x50"),
        ([10, 10, 20, 51], "outside the image 100x50"),
        ([10, 10, 20], "4 numbers"),
    ],
)
def test_bad_boxes_name_the_box_and_image_size(box, message):
    with pytest.raises(ValueError, match=message) as err:
        validate_box(box, 100, 50)
    assert str(box) in str(err.value) and "100x50" in str(err.value)


def test_iou_known_values():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [10, 10, 20, 20]) == 0.0
    assert math.isclose(iou([0, 0, 10, 10], [5, 0, 15, 10]), 50 / 150)
