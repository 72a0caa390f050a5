"""The Zoom-then-Diagnose trajectory (DESIGN §5, paper §2.1): rendering and parsing.

The teacher writes prose only (`search`, `diagnosis`); the box and the answer are inserted here
from the consensus record, so the published `bbox_2d` and answer always equal the labels.
Messages use TRL's conversational format with `{"type": "image"}` placeholders filled in order
from the row's `images: [full, crop]`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.records import ConsensusRecord, Rationale
from schemas.vocabulary import load_vocabulary

TRAJECTORY_VERSION = "zoom-v1"

SYSTEM_PROMPT = (
    "You are an ultrasound imaging expert. You may call one tool, zoom_in, to look closer at a "
    "region of the image before you answer.\n"
    'To call it, write <tool_call>{"bbox_2d": [x1, y1, x2, y2]}</tool_call>, where the box is in '
    "absolute pixels of the image you were given (x to the right, y downwards). The zoomed view "
    "comes back as the next message.\n"
    "Think inside <think>...</think> before each step, and give the final answer as JSON inside "
    "<answer>...</answer>."
)
ZOOM_PROMPT = "Here is the zoomed-in view of the region. Now answer the question."

# One assistant turn each; the text between the tags is the teacher's, the JSON is ours.
TOOL_TURN_RE = re.compile(r"\A<think>(?P<think>.*?)</think>\n<tool_call>(?P<json>\{.*?\})</tool_call>\Z", re.S)
ANSWER_TURN_RE = re.compile(r"\A<think>(?P<think>.*?)</think>\n<answer>(?P<json>\{.*?\})</answer>\Z", re.S)
# Lenient extractors for model outputs (evaluation, rewards): first match anywhere.
TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)
ANSWER_RE = re.compile(r"<answer>\s*(\{.*?\})\s*</answer>", re.S)
FORBIDDEN_IN_PROSE = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>")


class TrajectoryError(ValueError):
    """Text that does not follow the trajectory format."""


class ParsedTrajectory(BaseModel):
    model_config = ConfigDict(frozen=True)

    question: str
    search: str
    bbox_2d: list[int]
    zoom_prompt: str
    diagnosis: str
    answer: dict[str, str]


def _check_prose(name: str, text: str) -> None:
    for tag in FORBIDDEN_IN_PROSE:
        if tag in text:
            raise TrajectoryError(f"{name} text must not contain the tag {tag}")


def render_tool_turn(search: str, bbox_2d: Sequence[int]) -> str:
    """First assistant turn: the search reasoning and the zoom tool call."""
    _check_prose("search", search)
    if len(bbox_2d) != 4:
        raise TrajectoryError(f"bbox_2d {list(bbox_2d)} must have 4 numbers")
    box = json.dumps({"bbox_2d": [int(v) for v in bbox_2d]})
    return f"<think>{search}</think>\n<tool_call>{box}</tool_call>"


def render_answer_turn(diagnosis: str, answer: dict[str, str]) -> str:
    """Second assistant turn: the diagnosis reasoning and the answer JSON."""
    _check_prose("diagnosis", diagnosis)
    return f"<think>{diagnosis}</think>\n<answer>{json.dumps(answer, ensure_ascii=False)}</answer>"


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def render_trajectory(
    *,
    question: str,
    search: str,
    bbox_2d: Sequence[int],
    diagnosis: str,
    answer: dict[str, str],
    zoom_prompt: str = ZOOM_PROMPT,
    system_prompt: str = SYSTEM_PROMPT,
) -> list[dict[str, Any]]:
    """The five-message conversation of DESIGN §5 with two image placeholders."""
    return [
        {"role": "system", "content": [_text(system_prompt)]},
        {"role": "user", "content": [{"type": "image"}, _text(question)]},
        {"role": "assistant", "content": [_text(render_tool_turn(search, bbox_2d))]},
        {"role": "user", "content": [{"type": "image"}, _text(zoom_prompt)]},
        {"role": "assistant", "content": [_text(render_answer_turn(diagnosis, answer))]},
    ]


def _message_text(message: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for part in message["content"] if part.get("type") == "text")


def _strict_json(pattern: re.Pattern[str], text: str, what: str) -> tuple[str, Any]:
    match = pattern.match(text)
    if not match:
        raise TrajectoryError(f"{what} turn does not match the format: {text[:120]!r}")
    try:
        return match["think"], json.loads(match["json"])
    except json.JSONDecodeError as err:
        raise TrajectoryError(f"{what} turn has invalid JSON: {err}") from None


def parse_trajectory(messages: Sequence[dict[str, Any]]) -> ParsedTrajectory:
    """Inverse of `render_trajectory`; TrajectoryError on any deviation from the format."""
    roles = [m["role"] for m in messages]
    if roles != ["system", "user", "assistant", "user", "assistant"]:
        raise TrajectoryError(f"expected roles system,user,assistant,user,assistant; got {','.join(roles)}")
    images = [sum(p.get("type") == "image" for p in m["content"]) for m in messages]
    if images != [0, 1, 0, 1, 0]:
        raise TrajectoryError(f"expected one image in each user turn; got {images}")
    search, call = _strict_json(TOOL_TURN_RE, _message_text(messages[2]), "tool-call")
    diagnosis, answer = _strict_json(ANSWER_TURN_RE, _message_text(messages[4]), "answer")
    bbox = call.get("bbox_2d") if isinstance(call, dict) else None
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int) for v in bbox)):
        raise TrajectoryError(f"tool call must be {{'bbox_2d': [4 integers]}}, got {call!r}")
    if not (isinstance(answer, dict) and len(answer) == 1 and all(isinstance(v, str) for v in answer.values())):
        raise TrajectoryError(f"answer must be one {{key: value}} string pair, got {answer!r}")
    return ParsedTrajectory(
        question=_message_text(messages[1]),
        search=search,
        bbox_2d=bbox,
        zoom_prompt=_message_text(messages[3]),
        diagnosis=diagnosis,
        answer=answer,
    )


def extract_tool_call(text: str) -> list[float] | None:
    """The `bbox_2d` of the first tool call in free model output, or None if there is none valid."""
    match = TOOL_CALL_RE.search(text or "")
    if not match:
        return None
    try:
        box = json.loads(match.group(1)).get("bbox_2d")
    except (json.JSONDecodeError, AttributeError):
        return None
    if isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box):
        return [float(v) for v in box]
    return None


def extract_answer(text: str) -> dict[str, Any] | None:
    """The answer JSON object of free model output, or None."""
    match = ANSWER_RE.search(text or "")
    if not match:
        return None
    try:
        answer = json.loads(match.group(1))
    except json.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None


class AssemblyError(ValueError):
    """A rationale that was written for another label, c or box than the record it is joined with."""


def assemble_trajectory(
    record: ConsensusRecord, rationale: Rationale, *, min_pixels: int, max_pixels: int
) -> list[dict[str, Any]]:
    """The published conversation of one record: box and answer from the record, prose from the teacher.

    The rationale must have been written for exactly this label, c and box (AssemblyError otherwise).
    """
    _size, bbox_2d = record.model_frame(min_pixels, max_pixels)
    # compared in the original frame: the same record published with other frame settings is not stale
    written_for = (rationale.label, rationale.confidence, [float(v) for v in rationale.box])
    now = (record.label, record.confidence, [float(v) for v in record.box])
    if (rationale.image_id, rationale.attribute) != (record.image_id, record.attribute) or written_for != now:
        raise AssemblyError(
            f"rationale {rationale.image_id[:12]}:{rationale.attribute} was written for {written_for}, "
            f"the record now says {now}"
        )
    answer_key = load_vocabulary(record.organ).attribute(record.attribute).answer_key
    return render_trajectory(
        question=rationale.question,
        search=rationale.search,
        bbox_2d=bbox_2d,
        diagnosis=rationale.diagnosis,
        answer={answer_key: record.label},
    )


def answer_from_json(text: str | None, key: str) -> str | None:
    """The attribute's value in the `<answer>` JSON (`extract_answer`), or None."""
    answer = extract_answer(text or "")
    value = answer.get(key) if answer else None
    return value.strip() if isinstance(value, str) and value.strip() else None
