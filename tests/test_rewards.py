"""GRPO rewards on hand-written completions: every branch of eq. 2–3, the format check and the group gathering."""

from __future__ import annotations

import pytest

from training.rewards import (
    final_answer,
    format_ok,
    group_rewards,
    make_r_group,
    r_acc,
    r_fmt,
    r_loc,
    reward_functions,
)

KEY = "echogenicity"
BOX = [10, 20, 110, 120]


def rollout(answer: str | None = "Hypoechoic", *, box=BOX, think2=True, raw_answer=None, tool=True):
    """A completion as TRL's tool loop hands it over: assistant (tool call), tool (crop), assistant (answer)."""
    first = {"role": "assistant", "content": "<think>The lesion is in the lower left.</think>"}
    if tool:
        first["tool_calls"] = [{"type": "function", "function": {"name": "zoom_in", "arguments": {"bbox_2d": box}}}]
    if not tool:
        return [first]
    body = raw_answer if raw_answer is not None else (f'{{"{KEY}": "{answer}"}}' if answer else "not json")
    think = "<think>Darker than the parenchyma, with high certainty.</think>\n" if think2 else ""
    second = {"role": "assistant", "content": f"{think}<answer>{body}</answer>"}
    crop = {"role": "tool", "name": "zoom_in", "content": [{"type": "image"}, {"type": "text", "text": "zoomed"}]}
    return [first, crop, second]


def group(answers, label="Hypoechoic", c=1):
    return group_rewards(answers, [label] * len(answers), [c] * len(answers), group_size=len(answers), delta=0.75)


# ------------------------------------------------------------------------------------------ eq. 2 branches
def test_c1_consistent_and_correct_is_rewarded():
    assert group(["Hypoechoic"] * 4) == [1.0] * 4
    assert group(["Hypoechoic", "hypoechoic ".strip(), "HYPOECHOIC", "Isoechoic"]) == [1.0] * 4  # κ = 0.75 = δ


def test_c1_consistent_but_wrong_is_not():
    assert group(["Isoechoic"] * 4) == [0.0] * 4


def test_c1_inconsistent_is_not_even_when_the_mode_is_right():
    assert group(["Hypoechoic", "Hypoechoic", "Isoechoic", "Anechoic"]) == [0.0] * 4  # κ = 0.5 < δ


def test_c0_consistent_is_not_rewarded_whatever_the_answer():
    assert group(["Isoechoic"] * 4, c=0) == [0.0] * 4
    assert group(["Hypoechoic"] * 4, c=0) == [0.0] * 4


def test_c0_inconsistent_is_rewarded():
    assert group(["Hypoechoic", "Isoechoic", "Hypoechoic", "Anechoic"], c=0) == [1.0] * 4


def test_an_unparsable_group_gets_nothing_for_either_c():
    assert group([None] * 4, c=0) == [0.0] * 4  # the literal rule would give κ = 0 < δ → 1
    assert group([None] * 4, c=1) == [0.0] * 4


def test_unparsable_rollouts_get_nothing_and_never_form_the_mode():
    assert group(["Hypoechoic", "Isoechoic", None, None], c=0) == [1.0, 1.0, 0.0, 0.0]
    assert group([None, None, None, "Hypoechoic"], c=1) == [0.0] * 4  # one valid answer: κ = 0.25


def test_groups_are_scored_separately_and_must_be_whole():
    answers = ["Hypoechoic"] * 4 + ["Isoechoic", "Anechoic", "Hypoechoic", "Isoechoic"]
    labels, confidences = ["Hypoechoic"] * 8, [1] * 4 + [0] * 4
    assert group_rewards(answers, labels, confidences, group_size=4, delta=0.75) == [1.0] * 4 + [1.0] * 4
    with pytest.raises(ValueError, match="whole groups"):
        group_rewards(answers[:6], labels[:6], confidences[:6], group_size=4, delta=0.75)


def test_r_group_gathers_groups_that_straddle_processes():
    """Two processes with 2 rollouts each hold one group of 4: each gets its own slice of the group's rewards."""
    answers = {0: ["Hypoechoic", "Hypoechoic"], 1: ["Hypoechoic", "Isoechoic"]}
    columns = {"label": ["Hypoechoic"] * 2, "confidence": [1] * 2, "answer_key": [KEY] * 2}
    for rank in (0, 1):
        # gather_object concatenates every process's list in rank order: answers, then labels, then confidences
        world = iter([answers[0] + answers[1], columns["label"] * 2, columns["confidence"] * 2])
        r_group = make_r_group(4, 0.75, gather=lambda values, world=world: next(world), rank=lambda rank=rank: rank)
        assert r_group([rollout(a) for a in answers[rank]], **columns) == [1.0, 1.0]  # κ = 0.75, mode right
    mixed = iter([["Isoechoic", "Hypoechoic", "Anechoic", "Hypoechoic"], ["Hypoechoic"] * 4, [0] * 4])
    r_group = make_r_group(4, 0.75, gather=lambda values: next(mixed), rank=lambda: 1)
    local = [rollout("Anechoic"), rollout(None)]
    assert r_group(local, label=["Hypoechoic"] * 2, confidence=[0] * 2, answer_key=[KEY] * 2) == [1.0, 1.0]


# ------------------------------------------------------------------------------------------ eq. 3 parts
def test_r_loc_is_the_iou_of_the_zoomed_box_and_zero_without_a_call():
    completions = [rollout(box=BOX), rollout(box=[60, 20, 160, 120]), rollout(tool=False)]
    assert r_loc(completions, gt_bbox_2d=[BOX] * 3) == [1.0, pytest.approx(50 * 100 / (150 * 100)), 0.0]


def test_r_acc_counts_only_confident_rows():
    completions = [rollout("Hypoechoic"), rollout("Isoechoic"), rollout("Hypoechoic"), rollout(None)]
    kwargs = {"label": ["Hypoechoic"] * 4, "confidence": [1, 1, 0, 1], "answer_key": [KEY] * 4}
    assert r_acc(completions, **kwargs) == [1.0, 0.0, None, 0.0]


def test_r_fmt_checks_both_turns():
    good = rollout()
    assert format_ok(good, KEY)
    bad = {
        "no tool call": rollout(tool=False),
        "box of 3": rollout(box=[1, 2, 3]),
        "no think in turn 2": rollout(think2=False),
        "answer not JSON": rollout(None),
        "answer under another key": rollout(raw_answer='{"margin": "Smooth"}'),
    }
    for name, completion in bad.items():
        assert not format_ok(completion, KEY), name
    two_calls = rollout()
    two_calls[0]["tool_calls"] = two_calls[0]["tool_calls"] * 2
    assert not format_ok(two_calls, KEY)
    no_think = rollout()
    no_think[0]["content"] = "I will zoom."
    assert not format_ok(no_think, KEY)
    assert r_fmt([good, *bad.values()], answer_key=[KEY] * 6) == [1.0] + [0.0] * 5


def test_the_answer_parser_is_asked_only_when_the_json_fails():
    asked = []

    def parser(text, key):
        asked.append(text)
        return "Hypoechoic" if "darker" in text else None

    assert final_answer(rollout("Isoechoic"), KEY, parser) == "Isoechoic" and asked == []
    prose = rollout(raw_answer="it is darker")
    assert final_answer(prose, KEY) is None
    assert final_answer(prose, KEY, parser) == "Hypoechoic" and len(asked) == 1


def test_reward_functions_by_name_keep_the_recipe_order_and_reject_unknown_names():
    functions = reward_functions(["r_fmt", "r_group", "r_loc", "r_acc"], group_size=4, delta=0.75)
    assert [f.__name__ for f in functions] == ["r_fmt", "r_group", "r_loc", "r_acc"]
    parsed = reward_functions(["r_acc"], group_size=4, delta=0.75, parser=lambda text, key: None)
    assert parsed[0].__name__ == "r_acc"
    with pytest.raises(ValueError, match="r_typo"):
        reward_functions(["r_loc", "r_typo"], group_size=4, delta=0.75)
