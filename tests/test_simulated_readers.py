"""Simulated sonographers: determinism, disagreement that grows with difficulty, neighbour-only confusions, boxes."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from annotation.label_config import result_from_reading, validate_result
from annotation.readers import DEFAULT_READER_NOISE, ReaderNoise, neighbouring_values, simulate_reading
from schemas.frames import iou
from schemas.vocabulary import load_vocabulary, registered_organs

SIZE = (640, 480)
SECOND_LESION_PROBABILITY = 0.15  # as the phantom generator


def random_truth(organ, rng, difficulty=None, lesions=1):
    """Phantom-like lesions: any vocabulary value, 44-120 px boxes, difficulty fixed or uniform in [0, 1]."""
    truth = []
    for _ in range(lesions):
        attributes = {name: rng.choice(a.canonical_values) for name, a in load_vocabulary(organ).attributes.items()}
        x, y = rng.uniform(0, 500), rng.uniform(40, 380)
        box = [x, y, x + rng.uniform(44, 120), y + rng.uniform(44, 90)]
        truth.append((box, attributes, rng.random() if difficulty is None else difficulty))
    return truth


def two_readings(truth, organ, key, config=DEFAULT_READER_NOISE):
    return [simulate_reading(truth, organ, SIZE, reader_seed=seed, image_key=key, config=config) for seed in (1, 2)]


def attribute_agreement(difficulty, images=600):
    rng = random.Random(11)
    agree = total = 0
    for i in range(images):
        organ = registered_organs()[i % len(registered_organs())]
        a, b = two_readings(random_truth(organ, rng, difficulty), organ, f"img-{i}")
        for (_, attributes_a), (_, attributes_b) in zip(a, b, strict=True):
            agree += sum(attributes_a[name] == attributes_b[name] for name in attributes_a)
            total += len(attributes_a)
    return agree / total


def test_reading_is_deterministic_in_reader_and_image():
    truth = random_truth("thyroid", random.Random(0), difficulty=0.7, lesions=2)
    first = simulate_reading(truth, "thyroid", SIZE, reader_seed=3, image_key="abc")
    assert simulate_reading(truth, "thyroid", SIZE, reader_seed=3, image_key="abc") == first
    assert simulate_reading(truth, "thyroid", SIZE, reader_seed=4, image_key="abc") != first
    assert simulate_reading(truth, "thyroid", SIZE, reader_seed=3, image_key="abd") != first


def test_readers_agree_on_easy_lesions():
    assert attribute_agreement(0.0) >= 0.95


def test_readers_disagree_on_hard_lesions():
    assert 1 - attribute_agreement(1.0) >= 0.25


def test_boxes_jitter_more_on_hard_lesions():
    rng = random.Random(5)

    def mean_iou(difficulty):
        ious = []
        for i in range(300):
            truth = random_truth("liver", rng, difficulty)
            a, b = two_readings(truth, "liver", f"img-{i}")
            ious.append(iou(a[0][0], b[0][0]))
        return sum(ious) / len(ious)

    easy, hard = mean_iou(0.0), mean_iou(1.0)
    assert easy > 0.9 and hard < easy - 0.05


@pytest.mark.parametrize("organ", registered_organs())
def test_confusions_only_go_to_a_neighbouring_value(organ):
    rng = random.Random(organ)
    confusions = 0
    for i in range(300):
        truth = random_truth(organ, rng, difficulty=1.0)
        (_, read), *_ = simulate_reading(truth, organ, SIZE, reader_seed=9, image_key=str(i))
        for name, value in read.items():
            values = load_vocabulary(organ).attribute(name).canonical_values
            truth_value = truth[0][1][name]
            if value != truth_value:
                confusions += 1
                assert value in neighbouring_values(values, truth_value), (name, truth_value, value)
    assert confusions > 0  # the assertion above was exercised


def test_neighbours_follow_vocabulary_order():
    values = load_vocabulary("liver").attribute("echogenicity").canonical_values
    assert neighbouring_values(values, "Hypoechoic") == ["Anechoic", "Isoechoic"]
    assert neighbouring_values(values, "Anechoic") == ["Hypoechoic"]
    assert neighbouring_values(["Clear", "Unclear"], "Unclear") == ["Clear"]


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(1, 800),
    height=st.integers(1, 800),
    corner=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
    difficulty=st.floats(0, 1),
    seed=st.integers(0, 10**6),
)
def test_boxes_stay_inside_the_image_and_are_never_empty(width, height, corner, difficulty, seed):
    x1, x2 = sorted((corner[0] * width, corner[1] * width))
    y1, y2 = sorted((corner[2] * height, corner[3] * height))
    rough = ReaderNoise(box_jitter_base_px=20, box_jitter_per_difficulty=1.0)  # edges thrown far out
    truth = [([x1, y1, x2, y2], {"shape": "Oval"}, difficulty)]
    ((box, _),) = simulate_reading(truth, "liver", (width, height), reader_seed=seed, image_key="k", config=rough)
    assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
    assert box[2] - box[0] >= min(rough.min_box_side_px, width) - 1e-9
    assert box[3] - box[1] >= min(rough.min_box_side_px, height) - 1e-9


def test_readings_post_as_valid_results():
    rng = random.Random(2)
    for i in range(60):
        organ = registered_organs()[i % len(registered_organs())]
        truth = random_truth(organ, rng, lesions=2)
        reading = simulate_reading(truth, organ, SIZE, reader_seed=1, image_key=str(i))
        assert validate_result(organ, result_from_reading(organ, reading, SIZE)) == []


def echo_disagreement_shares(images=1500):
    """Per organ: the share of phantom-like images where two readers disagree on the echo attribute."""
    rng = random.Random(2024)
    disagree = dict.fromkeys(registered_organs(), 0)
    count = dict.fromkeys(registered_organs(), 0)
    for i in range(images):
        organ = registered_organs()[i % len(registered_organs())]
        echo = next(name for name, a in load_vocabulary(organ).attributes.items() if a.answer_key == "echo")
        lesions = 1 + (rng.random() < SECOND_LESION_PROBABILITY)
        a, b = two_readings(random_truth(organ, rng, lesions=lesions), organ, f"phantom-{i}")
        disagree[organ] += any(la[1][echo] != lb[1][echo] for la, lb in zip(a, b, strict=True))
        count[organ] += 1
    return {organ: disagree[organ] / count[organ] for organ in registered_organs()}


def test_echo_disagreement_is_realistic_with_the_defaults():
    shares = echo_disagreement_shares()
    overall = sum(shares.values()) / len(shares)
    assert 0.15 <= overall <= 0.45, shares
    assert all(0.15 <= share <= 0.45 for share in shares.values()), shares


def test_noise_config_is_validated():
    with pytest.raises(ValidationError):
        ReaderNoise(confusion_base=0.5, confusion_per_difficulty=0.6)  # p > 1 at d = 1
    with pytest.raises(ValidationError):
        ReaderNoise(box_jitter_base_px=-1)
    assert DEFAULT_READER_NOISE.confusion_probability(0.0) < DEFAULT_READER_NOISE.confusion_probability(1.0)


def test_difficulty_outside_unit_interval_is_refused():
    with pytest.raises(ValueError, match="difficulty"):
        simulate_reading([([1, 1, 9, 9], {}, 1.5)], "liver", SIZE, reader_seed=1, image_key="k")
