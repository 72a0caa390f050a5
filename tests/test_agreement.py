"""Agreement statistics against the reference implementations (scikit-learn, statsmodels)."""

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

from annotation.agreement import (
    agreement_with_consensus,
    attribute_statistics,
    cohen_kappa,
    confusion_between_readers,
    fleiss_kappa,
    label_matrix,
    plot_confusion,
    plot_iou_histogram,
    raw_agreement,
    statistics_markdown,
)

LABELS = ["Anechoic", "Hypoechoic", "Isoechoic", "Hyperechoic"]


@pytest.mark.parametrize("seed", range(60))
def test_cohen_kappa_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = LABELS[: rng.integers(2, 5)]
    a = rng.choice(labels, 40).tolist()
    b = [x if rng.random() < 0.6 else rng.choice(labels) for x in a]
    missing = rng.random(40) < 0.1  # missing readings are dropped pairwise
    a_m = [None if m else x for x, m in zip(a, missing, strict=True)]
    kept = [(x, y) for x, y, m in zip(a, b, missing, strict=True) if not m]
    expected = cohen_kappa_score([x for x, _ in kept], [y for _, y in kept], labels=labels)
    assert cohen_kappa(a_m, b, labels) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(30))
def test_fleiss_kappa_equals_statsmodels(seed):
    rng = np.random.default_rng(seed)
    readers = int(rng.integers(3, 6))
    truth = rng.choice(LABELS, 50)
    matrix = np.array(
        [[t if rng.random() < 0.7 else rng.choice(LABELS) for _ in range(readers)] for t in truth], dtype=object
    )
    codes = np.vectorize(LABELS.index)(matrix)
    table, _ = aggregate_raters(codes, n_cat=len(LABELS))
    assert fleiss_kappa(matrix, LABELS) == pytest.approx(statsmodels_fleiss(table))


def test_small_cases_by_hand():
    assert cohen_kappa(["A", "B", "A"], ["A", "B", "A"]) == 1.0
    assert cohen_kappa(["A", "A"], ["A", "A"]) == 1.0  # one label only: undefined, reported as agreement
    assert cohen_kappa(["A", "B", "A", "B"], ["A", "A", "B", "B"]) == pytest.approx(0.0)
    matrix = label_matrix({"i1": {"R1": "A", "R2": "A"}, "i2": {"R1": "A", "R2": "B"}, "i3": {"R1": "B"}}, ["R1", "R2"])
    assert matrix.tolist() == [["A", "A"], ["A", "B"], ["B", None]]
    assert raw_agreement(matrix) == 0.5  # i3 has one reading
    assert confusion_between_readers(matrix[:, 0], matrix[:, 1], ["A", "B"]).tolist() == [[1, 1], [0, 0]]
    assert agreement_with_consensus(matrix, ["A", "B", "B"], ["R1", "R2"]) == {"R1": pytest.approx(2 / 3), "R2": 1.0}


def test_report_and_plots(tmp_path):
    stats = attribute_statistics(
        "liver",
        "echogenicity",
        readings={"i1": {"R1": "Anechoic", "R2": "Anechoic"}, "i2": {"R1": "Hypoechoic", "R2": "Isoechoic"}},
        readers=["R1", "R2"],
        labels=LABELS,
        consensus_labels={"i1": "Anechoic", "i2": "Hypoechoic"},
        confidences=[1, 0],
        box_ious=[0.9, 0.4],
    )
    assert (stats.n_items, stats.share_c0, stats.raw_agreement) == (2, 0.5, 0.5)
    markdown = statistics_markdown([stats])
    assert "| echogenicity | 2 |" in markdown and "0.50" in markdown and "0.65" in markdown  # mean IoU
    for path in (
        plot_confusion(stats, tmp_path / "c.png"),
        plot_iou_histogram("liver", [0.9, 0.4], tmp_path / "h.png"),
    ):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300
