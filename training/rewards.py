"""GRPO rewards of uncertainty-aware Zoom-then-Diagnose (paper eq. 2–3), pure functions registered by name.

A completion is what TRL's tool loop hands a reward function: the list of messages the policy produced
after the prompt: `[assistant turn 1 {content, tool_calls}, tool {crop}, assistant turn 2 {content}]`, or
only `[assistant turn 1]` when the policy did not call the tool. Dataset columns arrive as keyword lists.

- `r_loc`: IoU of the box the policy zoomed into with the consensus box, both in the model frame.
- `r_acc`: 1 if the answer equals the label; only for c = 1 rows, `None` (not counted) for c = 0.
- `r_fmt`: 1 if both turns follow the format: `<think>…</think>` then exactly one `{"bbox_2d": [4 numbers]}`
  call; `<think>…</think>\\n<answer>{JSON with the attribute's key}</answer>`.
- `r_group` (R_group, eq. 2): over the G rollouts of a prompt, κ = share of the most common answer and
  ξ = 1[that answer is the label]; c = 1: 1[κ ≥ δ]·ξ (consistent and right); c = 0: 1[κ < δ] (the
  policy should not be consistently sure where sonographers disagreed).

Decision (the literal rule rewards garbage): a rollout whose answer cannot be parsed gets R_group = 0,
and unparsable answers never form the mode. A group where no rollout answered gets 0 everywhere —
otherwise a c = 0 group of garbage would score κ = 0 < δ, the full reward. Answers are parsed from the
`<answer>` JSON; only when that fails and an answer parser (the teacher endpoint) is configured is the
text sent to it, as the paper parses with Qwen2.5-VL-72B.

TRL logs each reward function as its own metric (`rewards/<name>/mean`); the weights are the recipe's
`reward_weights`, in the order of its `reward_names`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from schemas.frames import iou
from schemas.trajectory import answer_from_json

THINK = r"<think>(?:(?!</?think>).)+</think>"
TURN1_TEXT_RE = re.compile(rf"\A\s*{THINK}\s*\Z", re.S)  # turn 1's text once TRL has parsed the tool call out
TURN2_RE = re.compile(rf"\A\s*{THINK}\n<answer>(\{{.*?\}})</answer>\s*\Z", re.S)
AnswerParser = Callable[[str, str], str | None]  # (text, answer key) → answer, for text the JSON parse missed


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content or [] if part.get("type") == "text")


def tool_box(completion: Sequence[dict[str, Any]]) -> list[float] | None:
    """The bbox_2d of the first turn's (only) zoom call, or None."""
    calls = completion[0].get("tool_calls") or [] if completion else []
    if len(calls) != 1:
        return None
    arguments = calls[0].get("function", {}).get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    box = arguments.get("bbox_2d") if isinstance(arguments, dict) else None
    if isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box):
        return [float(v) for v in box]
    return None


def final_text(completion: Sequence[dict[str, Any]]) -> str | None:
    """The second assistant turn's text: only after a zoom (assistant, tool, assistant)."""
    if len(completion) < 3 or completion[-1].get("role") != "assistant":
        return None
    return _text(completion[-1])


def final_answer(completion: Sequence[dict[str, Any]], key: str, parser: AnswerParser | None = None) -> str | None:
    text = final_text(completion)
    answer = answer_from_json(text, key)
    if answer is None and parser is not None and text:
        answer = parser(text, key)
    return answer


def same_answer(answer: str | None, label: str) -> bool:
    return answer is not None and answer.casefold() == label.casefold()


def format_ok(completion: Sequence[dict[str, Any]], key: str) -> bool:
    if tool_box(completion) is None or not TURN1_TEXT_RE.match(_text(completion[0])):
        return False
    text = final_text(completion)
    match = TURN2_RE.match(text or "")
    return bool(match) and answer_from_json(text, key) is not None


# ------------------------------------------------------------------------------------------ per rollout
def r_loc(completions: list, gt_bbox_2d: list, **_: Any) -> list[float]:
    boxes = [tool_box(c) for c in completions]
    return [iou(box, gt) if box is not None else 0.0 for box, gt in zip(boxes, gt_bbox_2d, strict=True)]


def r_acc(
    completions: list, label: list, confidence: list, answer_key: list, parser: AnswerParser | None = None, **_: Any
) -> list[float | None]:
    return [
        float(same_answer(final_answer(c, key, parser), y)) if conf == 1 else None
        for c, y, conf, key in zip(completions, label, confidence, answer_key, strict=True)
    ]


def r_fmt(completions: list, answer_key: list, **_: Any) -> list[float]:
    return [float(format_ok(c, key)) for c, key in zip(completions, answer_key, strict=True)]


# ------------------------------------------------------------------------------------------ per group
def group_rewards(
    answers: Sequence[str | None], labels: Sequence[str], confidences: Sequence[int], *, group_size: int, delta: float
) -> list[float]:
    """R_group of eq. 2 for consecutive groups of `group_size` rollouts (one prompt each), gated on parsable answers."""
    if len(answers) % group_size:
        raise ValueError(f"{len(answers)} rollouts are not whole groups of {group_size}")
    rewards: list[float] = []
    for start in range(0, len(answers), group_size):
        group = answers[start : start + group_size]
        label, confidence = labels[start], confidences[start]
        valid = [a.casefold() for a in group if a is not None]
        if not valid:
            rewards += [0.0] * group_size
            continue
        mode, count = Counter(valid).most_common(1)[0]
        kappa = count / group_size
        consistent = kappa >= delta
        reward = float(consistent and mode == label.casefold()) if confidence == 1 else float(not consistent)
        rewards += [reward if a is not None else 0.0 for a in group]
    return rewards


def make_r_group(
    group_size: int,
    delta: float,
    gather: Callable[[list], list] | None = None,
    rank: Callable[[], int] | None = None,
    parser: AnswerParser | None = None,
) -> Callable[..., list[float]]:
    """R_group as a TRL reward function: groups can straddle processes, so all answers are gathered first."""
    gather = gather or (lambda values: values)
    rank = rank or (lambda: 0)

    def r_group(completions: list, label: list, confidence: list, answer_key: list, **_: Any) -> list[float]:
        answers = [final_answer(c, key, parser) for c, key in zip(completions, answer_key, strict=True)]
        everything = group_rewards(
            gather(answers), gather(list(label)), gather(list(confidence)), group_size=group_size, delta=delta
        )
        n = len(completions)
        return everything[rank() * n : (rank() + 1) * n]

    return r_group


REWARDS: dict[str, Callable[..., list]] = {"r_loc": r_loc, "r_acc": r_acc, "r_fmt": r_fmt}


def reward_functions(
    names: Sequence[str],
    *,
    group_size: int,
    delta: float,
    distributed: bool = False,
    parser: AnswerParser | None = None,
) -> list[Callable[..., list]]:
    """The recipe's reward functions by name, in its order (unknown names: a ValueError naming them)."""
    unknown = [n for n in names if n not in (*REWARDS, "r_group")]
    if unknown:
        raise ValueError(f"unknown reward names {unknown}; known: {[*REWARDS, 'r_group']}")
    gather = rank = None
    if distributed:
        from accelerate import PartialState
        from accelerate.utils import gather_object

        gather, rank = gather_object, (lambda: PartialState().process_index)
    functions = []
    for name in names:
        if name == "r_group":
            functions.append(make_r_group(group_size, delta, gather, rank, parser))
        elif parser is not None and name == "r_acc":
            functions.append(_with_parser(r_acc, parser, "r_acc"))
        else:
            functions.append(REWARDS[name])
    return functions


def _with_parser(function: Callable[..., list], parser: AnswerParser, name: str) -> Callable[..., list]:
    def bound(*args: Any, **kwargs: Any) -> list:
        return function(*args, parser=parser, **kwargs)

    bound.__name__ = name  # TRL names the metric after the function
    return bound
