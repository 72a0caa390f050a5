"""Agreement statistics: against scikit-learn and statsmodels, on hand-computed cases, and the report."""

import math

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

from annotation.agreement import (
    agreement_with_consensus,
    attribute_statistics,
    box_iou_summary,
    cohen_kappa,
    confusion_between_readers,
    fleiss_kappa,
    fleiss_subset,
    label_matrix,
    plot_confusion,
    plot_iou_histogram,
    raw_agreement,
    statistics_markdown,
)

LABEL_SETS = [
    ["Parallel", "Not parallel"],
    ["Oval", "Round", "Irregular"],
    ["Anechoic", "Hypoechoic", "Isoechoic", "Hyperechoic", "Complex cystic and solid", "Heterogeneous"],
]


def _noisy_copy(rng, labels, values, p_same):
    return [str(v) if rng.random() < p_same else str(rng.choice(labels)) for v in values]


@pytest.mark.parametrize("seed", range(60))
def test_cohen_kappa_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = LABEL_SETS[seed % len(LABEL_SETS)]
    n = int(rng.integers(10, 80))
    a = [str(v) for v in rng.choice(labels, n)]
    b = _noisy_copy(rng, labels, a, p_same=rng.uniform(0.0, 0.9))
    a_missing = [None if rng.random() < 0.1 else x for x in a]
    b_missing = [None if rng.random() < 0.1 else y for y in b]
    kept = [(x, y) for x, y in zip(a_missing, b_missing, strict=True) if x is not None and y is not None]
    expected = cohen_kappa_score([x for x, _ in kept], [y for _, y in kept], labels=labels)
    if math.isnan(expected):  # one label only: our documented convention, not scikit-learn's NaN
        expected = 1.0
    assert cohen_kappa(a_missing, b_missing, labels) == pytest.approx(expected)
    assert cohen_kappa(a_missing, b_missing) == pytest.approx(expected)  # labels seen are enough


@pytest.mark.parametrize("seed", range(30))
def test_fleiss_kappa_equals_statsmodels(seed):
    rng = np.random.default_rng(seed)
    labels = LABEL_SETS[seed % len(LABEL_SETS)]
    readers = int(rng.integers(3, 6))
    truth = rng.choice(labels, int(rng.integers(10, 60)))
    matrix = np.array([_noisy_copy(rng, labels, [t] * readers, p_same=0.6) for t in truth], dtype=object)
    table, _ = aggregate_raters(np.vectorize(labels.index)(matrix), n_cat=len(labels))
    assert fleiss_kappa(matrix, labels) == pytest.approx(statsmodels_fleiss_kappa(table, method="fleiss"))


def test_fleiss_kappa_drops_items_with_one_reading_and_equals_statsmodels_on_the_rest():
    labels = ["A", "B"]
    matrix = np.array([["A", "A", "B"], ["B", "B", "B"], ["A", None, None], ["A", "B", "A"]], dtype=object)
    full = matrix[[0, 1, 3]]
    table, _ = aggregate_raters(np.vectorize(labels.index)(full), n_cat=2)
    assert fleiss_kappa(matrix, labels) == pytest.approx(statsmodels_fleiss_kappa(table))


def test_fleiss_kappa_refuses_unequal_numbers_of_readings():
    matrix = np.array([["A", "A", "B"], ["B", "B", None]], dtype=object)
    with pytest.raises(ValueError, match="same number of readings"):
        fleiss_kappa(matrix, ["A", "B"])


def test_fleiss_subset_keeps_the_most_common_number_of_readings():
    matrix = np.array([["A", "A", None], ["B", None, "B"], ["A", "B", "A"], ["A", None, None]], dtype=object)
    assert fleiss_subset(matrix).tolist() == [["A", "A", None], ["B", None, "B"]]


def test_perfect_agreement_is_one():
    assert cohen_kappa(["A", "B", "A"], ["A", "B", "A"]) == 1.0
    assert fleiss_kappa(np.array([["A", "A", "A"], ["B", "B", "B"]], dtype=object), ["A", "B"]) == 1.0


def test_chance_level_agreement_is_zero():
    # p_o = 0.5, each reader says A half the time: p_e = 0.5, κ = 0
    assert cohen_kappa(["A", "B", "A", "B"], ["A", "A", "B", "B"]) == pytest.approx(0.0)


def test_hand_computed_kappa():
    # 10 items: table [[4, 1], [2, 3]]; p_o = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, κ = 0.2 / 0.5 = 0.4
    a = ["A"] * 5 + ["B"] * 5
    b = ["A"] * 4 + ["B"] + ["A"] * 2 + ["B"] * 3
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # Fleiss, 2 items × 3 readers: P_i = 1 and 1/3, P̄ = 2/3; p = (4/6, 2/6), P̄_e = 5/9; κ = (1/9) / (4/9)
    assert fleiss_kappa(np.array([["A", "A", "A"], ["A", "B", "B"]], dtype=object), ["A", "B"]) == pytest.approx(0.25)


def test_single_label_is_defined():
    assert cohen_kappa(["A", "A"], ["A", "A"]) == 1.0  # p_e = 1: unanimous → 1.0, not NaN
    assert cohen_kappa(["A", "A"], ["A", "A"], labels=["A", "B"]) == 1.0
    assert fleiss_kappa(np.array([["A", "A", "A"]] * 3, dtype=object), ["A", "B"]) == 1.0


def test_nothing_to_compare_is_nan():
    assert math.isnan(cohen_kappa(["A", None], [None, "B"]))
    assert math.isnan(fleiss_kappa(np.array([["A", None, None]], dtype=object), ["A"]))
    assert math.isnan(raw_agreement(np.array([["A", None]], dtype=object)))


def test_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="not among"):
        cohen_kappa(["A", "C"], ["A", "A"], labels=["A", "B"])


def test_label_matrix_raw_agreement_and_confusion():
    readings = {"i2": {"R1": "A", "R2": "B"}, "i1": {"R1": "A", "R2": "A"}, "i3": {"R1": "B"}}
    matrix = label_matrix(readings, ["R1", "R2"])
    assert matrix.tolist() == [["A", "A"], ["A", "B"], ["B", None]]
    assert raw_agreement(matrix) == 0.5  # i3 has one reading and does not count
    assert confusion_between_readers(matrix[:, 0], matrix[:, 1], ["A", "B"]).tolist() == [[1, 1], [0, 0]]
    assert confusion_between_readers(matrix[:, 1], matrix[:, 0], ["A", "B"]).tolist() == [[1, 0], [1, 0]]


def test_raw_agreement_with_three_readers():
    matrix = np.array([["A", "A", None], ["A", "A", "B"], ["B", "B", "B"], [None, None, "A"]], dtype=object)
    assert raw_agreement(matrix) == pytest.approx(2 / 3)


def test_agreement_with_consensus_per_reader():
    matrix = np.array([["A", "A"], ["A", "B"], ["B", None], [None, "A"]], dtype=object)
    agreement = agreement_with_consensus(matrix, ["A", "B", "B", None], ["R1", "R2"])
    assert agreement == {"R1": pytest.approx(2 / 3), "R2": 1.0}


def test_box_iou_summary():
    summary = box_iou_summary([0.0, 0.25, 0.5, 0.75, 1.0])
    assert (summary.n, summary.mean, summary.p10, summary.p50, summary.p90) == (5, 0.5, 0.1, 0.5, 0.9)
    assert box_iou_summary([]) is None


READINGS = {
    "i1": {"R1": "Anechoic", "R2": "Anechoic"},
    "i2": {"R1": "Hypoechoic", "R2": "Complex cystic and solid"},
    "i3": {"R1": "Complex cystic and solid", "R2": "Complex cystic and solid"},
    "i4": {"R1": "Hypoechoic", "R2": "Hypoechoic"},
}


@pytest.fixture
def two_reader_stats():
    return attribute_statistics(
        "breast",
        "echo_pattern",
        readings=READINGS,
        readers=["R1", "R2"],
        consensus_labels={"i1": "Anechoic", "i2": "Hypoechoic", "i3": "Complex cystic and solid", "i4": "Hypoechoic"},
        confidences=[1, 0, 1, 1],
        box_ious=[0.9, 0.4, 0.8, 0.7],
        labels=LABEL_SETS[2],
    )


def test_attribute_statistics_two_readers(two_reader_stats):
    s = two_reader_stats
    a = [READINGS[i]["R1"] for i in sorted(READINGS)]
    b = [READINGS[i]["R2"] for i in sorted(READINGS)]
    assert (s.kind, s.n_items, s.n_kappa_items) == ("cohen", 4, 4)
    assert s.kappa == pytest.approx(cohen_kappa_score(a, b))
    assert (s.raw_agreement, s.share_c0) == (0.75, 0.25)
    assert s.per_reader_agreement == {"R1": 1.0, "R2": 0.75}
    assert s.confusion_readers == ("R1", "R2")
    assert s.confusion[1][4] == 1 and sum(map(sum, s.confusion)) == 4  # Hypoechoic (R1) × Complex (R2)
    assert s.box_iou.mean == pytest.approx(0.7)


def test_attribute_statistics_more_readers_uses_fleiss():
    readings = {
        "i1": {"R1": "A", "R2": "A", "R3": "A"},
        "i2": {"R1": "A", "R2": "B", "R3": "B"},
        "i3": {"R1": "B", "R3": "B"},  # not in the Fleiss subset (two readings)
    }
    s = attribute_statistics("liver", "shape", readings, ["R1", "R2", "R3"], {}, [], [], labels=["A", "B"])
    assert (s.kind, s.kappa, s.n_kappa_items) == ("fleiss", pytest.approx(0.25), 2)
    assert s.confusion_readers == ("R1", "R3")  # the pair sharing the most items
    assert s.box_iou is None and math.isnan(s.share_c0)
    assert all(math.isnan(v) for v in s.per_reader_agreement.values())


def test_markdown_contains_the_figures(two_reader_stats):
    markdown = statistics_markdown([two_reader_stats])
    assert "## breast" in markdown
    assert f"| echo_pattern | 4 | {two_reader_stats.kappa:.2f} (cohen) | 0.75 | 0.25 | 0.70 |" in markdown
    assert "| attribute | R1 | R2 |" in markdown and "| echo_pattern | 1.00 | 0.75 |" in markdown


def test_markdown_shows_undefined_figures_as_a_dash():
    s = attribute_statistics("liver", "shape", {"i1": {"R1": "A"}}, ["R1", "R2"], {}, [], [])
    assert "| shape | 1 | – (cohen) | – | – | – |" in statistics_markdown([s])


def test_plots_are_png(two_reader_stats, tmp_path):
    paths = [
        plot_confusion(two_reader_stats, tmp_path / "confusion.png"),
        plot_iou_histogram("breast", [0.9, 0.4, 0.8, 0.7], tmp_path / "iou.png", threshold=0.5),
    ]
    for path in paths:
        assert path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 300
