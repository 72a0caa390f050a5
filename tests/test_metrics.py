"""The paper's evaluation metrics on hand-built rollout sets with known answers."""

from __future__ import annotations

import json
import math

import pytest

from schemas.metrics import (
    UNPARSABLE,
    SampleResult,
    accuracy,
    alignment,
    compute_metrics,
    consensus,
    entropy,
    entropy_gap,
    expected_calibration_error,
    mean_iou,
    selective_accuracy,
)


def test_consensus_is_the_mode_and_its_share_with_ties_to_the_first_seen():
    assert consensus(["Hypoechoic"] * 6 + ["Isoechoic"] * 2) == ("hypoechoic", 0.75)
    assert consensus(["Isoechoic", "Hypoechoic", "Hypoechoic", "Isoechoic"]) == ("isoechoic", 0.5)  # tie
    assert consensus(["Hypoechoic", "Isoechoic", "Isoechoic", "Hypoechoic"]) == ("hypoechoic", 0.5)
    assert consensus([" hypoechoic", "HYPOECHOIC "]) == ("hypoechoic", 1.0)
    with pytest.raises(ValueError):
        consensus([])


def test_unparsable_rollouts_are_one_answer_class_of_their_own():
    assert consensus([None] * 8) == (UNPARSABLE, 1.0)  # confidently wrong, not left out
    assert consensus([None, "", None, "Anechoic"]) == (UNPARSABLE, 0.75)
    assert consensus(["Anechoic", None, "Anechoic", None, "Cystic"]) == ("anechoic", 0.4)
    assert selective_accuracy([UNPARSABLE], [1.0], [UNPARSABLE], 0.75) == 0.0  # never equal to a label


def test_accuracy_counts_only_consensus_samples():
    assert accuracy(["A", "B", "A", None], ["A", "A", "B", "A"], [1, 1, 0, 1]) == pytest.approx(1 / 3)
    assert math.isnan(accuracy(["A"], ["A"], [0]))  # no c = 1 sample


def test_mean_iou_counts_a_missing_box_as_zero():
    assert mean_iou([[0, 0, 10, 10], [0, 0, 10, 20], None], [[0, 0, 10, 10]] * 3) == pytest.approx((1 + 0.5 + 0) / 3)


def test_selective_accuracy_and_alignment_use_delta():
    predictions, shares = ["a", "b", "a", "c"], [1.0, 0.75, 0.5, 0.875]
    labels, confidences = ["a", "a", "a", "c"], [1, 1, 0, 0]
    assert selective_accuracy(predictions, shares, labels, 0.75) == pytest.approx(2 / 3)  # samples 0, 1, 3
    assert alignment(shares, confidences, 0.75) == pytest.approx(3 / 4)  # sample 3 sure where readers were not
    assert math.isnan(selective_accuracy(predictions, [0.5] * 4, labels, 0.75))  # nobody sure: NaN


def test_ece_by_hand_and_with_empty_bins():
    # bins of 0.1: [0.7, 0.8) holds 0.75 twice (1 right, 1 wrong); 1.0 has its own bin (2 right)
    assert expected_calibration_error([0.75, 0.75, 1.0, 1.0], [True, False, True, True], 10) == pytest.approx(
        0.5 * abs(0.5 - 0.75) + 0.5 * 0.0
    )
    assert expected_calibration_error([0.05], [False], 10) == pytest.approx(0.05)  # nine empty bins
    assert expected_calibration_error([0.5, 0.5], [True, True], 1) == pytest.approx(0.5)
    assert math.isnan(expected_calibration_error([], [], 10))


def test_entropy_and_the_entropy_gap():
    assert entropy(["a"] * 8) == 0.0
    assert entropy(["a"] * 4 + ["b"] * 4) == pytest.approx(math.log(2))
    assert entropy([None, None, "a", "a"]) == pytest.approx(math.log(2))  # unparsable is a class
    assert entropy_gap([math.log(2), 0.0, 0.0], [0, 1, 1]) == pytest.approx(math.log(2))
    assert math.isnan(entropy_gap([0.3], [1]))  # no c = 0 sample


def test_compute_metrics_of_a_small_set():
    def sample(i, label, c, greedy, sampled, box=(0, 0, 10, 10)):
        return SampleResult(f"s{i}", "breast", label, c, [0, 0, 10, 10], greedy, list(box) if box else None, sampled)

    results = [
        sample(0, "A", 1, "A", ["A"] * 8),  # sure and right
        sample(1, "A", 1, "B", ["B"] * 6 + ["A"] * 2),  # sure and wrong
        sample(2, "A", 0, "A", ["A", "B"] * 4),  # unsure where readers disagreed
        sample(3, "B", 0, None, [None] * 8, box=None),  # garbage: sure (of nothing) and wrong
    ]
    m = compute_metrics(results, delta=0.75, bins=10)
    assert (m.n, m.n_consensus) == (4, 2)
    assert m.acc == pytest.approx(0.5) and m.miou == pytest.approx(0.75)
    assert m.sacc == pytest.approx(1 / 3)  # samples 0, 1, 3 are sure; only 0 is right
    assert m.align == pytest.approx(3 / 4)  # 0, 1 (sure, c = 1) and 2 (unsure, c = 0) align; 3 does not
    assert m.entropy_gap == pytest.approx((math.log(2) + 0) / 2 - 0 - (0 + entropy(["B"] * 6 + ["A"] * 2)) / 2)
    conf, hits = [1.0, 0.75, 0.5, 1.0], [True, False, False, False]
    assert m.ece == pytest.approx(expected_calibration_error(conf, hits, 10))


def test_ece_equals_torchmetrics_binary_calibration_error(training_env):
    code = (
        "import json, torch\n"
        "from torchmetrics.classification import BinaryCalibrationError\n"
        "from schemas.metrics import expected_calibration_error\n"
        "out = []\n"
        "for seed in range(20):\n"
        "    g = torch.Generator().manual_seed(seed)\n"
        "    n = int(torch.randint(1, 200, (1,), generator=g))\n"
        "    bins = int(torch.randint(1, 20, (1,), generator=g))\n"
        "    conf = torch.rand(n, generator=g, dtype=torch.float64)\n"
        "    if seed % 2: conf = torch.randint(0, 9, (n,), generator=g).double() / 8  # k/8 shares, boundaries\n"
        "    hits = torch.randint(0, 2, (n,), generator=g)\n"
        "    ref = BinaryCalibrationError(n_bins=bins, norm='l1')(conf, hits).item()\n"
        "    ours = expected_calibration_error(conf.tolist(), hits.bool().tolist(), bins)\n"
        "    out.append([ref, ours])\n"
        "print(json.dumps(out))\n"
    )
    result = training_env.run("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    pairs = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(pairs) == 20
    for reference, ours in pairs:
        assert ours == pytest.approx(reference, abs=1e-6)
