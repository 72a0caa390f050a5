import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.trajectory import (
    TrajectoryError,
    extract_answer,
    extract_tool_call,
    parse_trajectory,
    render_trajectory,
)

prose = st.text(min_size=1, max_size=200).filter(lambda t: "<" not in t)
box = st.lists(st.integers(0, 4000), min_size=4, max_size=4)
answer_value = st.text(min_size=1, max_size=40)


@given(prose, prose, box, st.sampled_from(["echo", "shape", "margin"]), answer_value, prose)
def test_render_parse_round_trip(search, diagnosis, bbox, key, value, question):
    messages = render_trajectory(
        question=question, search=search, bbox_2d=bbox, diagnosis=diagnosis, answer={key: value}
    )
    parsed = parse_trajectory(messages)
    assert parsed.bbox_2d == bbox
    assert parsed.answer == {key: value}
    assert (parsed.search, parsed.diagnosis, parsed.question) == (search, diagnosis, question)


def _messages():
    return render_trajectory(
        question="Q?", search="scan", bbox_2d=[1, 2, 30, 40], diagnosis="dx", answer={"echo": "Hypoechoic"}
    )


def test_layout_matches_design():
    messages = _messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert (
        messages[2]["content"][0]["text"] == '<think>scan</think>\n<tool_call>{"bbox_2d": [1, 2, 30, 40]}</tool_call>'
    )
    assert messages[4]["content"][0]["text"] == '<think>dx</think>\n<answer>{"echo": "Hypoechoic"}</answer>'
    assert [p["type"] for p in messages[1]["content"]] == ["image", "text"]


def test_prose_containing_a_tag_is_refused():
    with pytest.raises(TrajectoryError, match="must not contain"):
        render_trajectory(question="Q", search="x</think>y", bbox_2d=[0, 0, 1, 1], diagnosis="d", answer={"a": "b"})


@pytest.mark.parametrize(
    ("turn", "text", "message"),
    [
        (2, "<think>s</think> <tool_call>{}</tool_call>", "does not match"),
        (2, '<think>s</think>\n<tool_call>{"bbox_2d": [1, 2, 3]}</tool_call>', "4 integers"),
        (2, "<think>s</think>\n<tool_call>{bad json}</tool_call>", "invalid JSON"),
        (4, '<think>d</think>\n<answer>{"a": "b", "c": "d"}</answer>', "one {key: value}"),
        (4, "<think>d</think>\n<answer>[1]</answer>", "does not match"),
    ],
)
def test_malformed_turns_are_rejected(turn, text, message):
    messages = _messages()
    messages[turn]["content"][0]["text"] = text
    with pytest.raises(TrajectoryError, match=message):
        parse_trajectory(messages)


def test_wrong_image_count_is_rejected():
    messages = _messages()
    messages[3]["content"] = [{"type": "text", "text": "no image"}]
    with pytest.raises(TrajectoryError, match="one image in each user turn"):
        parse_trajectory(messages)


def test_lenient_extractors_for_model_output():
    assert extract_tool_call('blah <tool_call> {"bbox_2d": [1, 2.5, 3, 4]} </tool_call>') == [1, 2.5, 3, 4]
    assert extract_tool_call('<tool_call>{"bbox_2d": [1, 2]}</tool_call>') is None
    assert extract_tool_call("no call") is None
    assert extract_answer('<answer>{"echo": "Isoechoic"}</answer>') == {"echo": "Isoechoic"}
    assert extract_answer("<answer>nope</answer>") is None
