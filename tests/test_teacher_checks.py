"""One test per reason a teacher reply is refused, and the template backend against the validator."""

from __future__ import annotations

import json
import re

import pytest

from flows.teacher.backends import TemplateBackend
from flows.teacher.checks import CheckContext, check_reply
from flows.teacher.prompting import TeacherRequest, load_prompt_bundle, render_messages, render_repair
from schemas.vocabulary import load_vocabulary, registered_organs
from schemas.wording import contains_any

BUNDLE = load_prompt_bundle()
GOOD_SEARCH = (
    "I scan the liver parenchyma from the near field to the far field. A lesion in the centre of the image "
    "differs from the background, so I zoom in on it."
)


def request(label: str = "Hypoechoic", confidence: int = 1, organ: str = "liver", attribute: str = "echogenicity"):
    return TeacherRequest(
        item_key=f"{'a' * 64}:{attribute}",
        image_id="a" * 64,
        organ=organ,
        attribute=attribute,
        question="What is the echogenicity of the liver lesion?",
        label=label,
        confidence=confidence,
        bbox_2d=(100, 80, 180, 150),
        box=(100.0, 80.0, 180.0, 150.0),
        model_size=(392, 308),
    )


def problems(search: str, diagnosis: str, **kwargs: object) -> list[str]:
    reply = json.dumps({"search": search, "diagnosis": diagnosis})
    return check_reply(reply, CheckContext(request=request(**kwargs), bundle=BUNDLE))[1]


DEFINITIVE = "The lesion is clearly darker than the surrounding liver parenchyma, so it is Hypoechoic."
CAUTIOUS = "The lesion seems somewhat darker than the surrounding liver parenchyma, so it is probably Hypoechoic."


def test_a_good_reply_passes_for_each_tone():
    assert problems(GOOD_SEARCH, DEFINITIVE, confidence=1) == []
    assert problems(GOOD_SEARCH, CAUTIOUS, confidence=0) == []


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty_reply"),
        ('{"search": "unterminated', "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"diagnosis": "x"}', "missing_search"),
        ('{"search": "x", "diagnosis": "  "}', "missing_diagnosis"),
    ],
)
def test_unparsable_replies(reply, reason):
    assert check_reply(reply, CheckContext(request=request(), bundle=BUNDLE)) == (None, [reason])


@pytest.mark.parametrize(
    ("search", "diagnosis", "kwargs", "reason"),
    [
        (GOOD_SEARCH + " It looks hypoechoic.", DEFINITIVE, {}, "search_reveals_answer"),
        (GOOD_SEARCH + " Maybe it is hyperechoic.", DEFINITIVE, {}, "search_reveals_answer"),
        (GOOD_SEARCH, "The lesion is clearly darker than the liver, with high certainty.", {}, "diagnosis_omits_label"),
        (GOOD_SEARCH, DEFINITIVE + " It is not isoechoic.", {}, "diagnosis_contradicts_label"),
        (GOOD_SEARCH, CAUTIOUS, {"confidence": 1}, "cautious_tone_on_agreement"),
        (GOOD_SEARCH, "The lesion is darker than the liver parenchyma: Hypoechoic.", {}, "missing_definitive_tone"),
        (GOOD_SEARCH, DEFINITIVE, {"confidence": 0}, "definitive_tone_on_disagreement"),
        (
            GOOD_SEARCH,
            "The lesion is darker than the liver parenchyma: Hypoechoic.",
            {"confidence": 0},
            "missing_cautious_tone",
        ),
        ("I zoom in.", DEFINITIVE, {}, "search_too_short"),
        (GOOD_SEARCH, DEFINITIVE + " very" * 130, {}, "diagnosis_too_long"),
        (GOOD_SEARCH + " The box is [100, 80, 180, 150].", DEFINITIVE, {}, "contains_coordinates"),
        (GOOD_SEARCH + " It spans 80 px.", DEFINITIVE, {}, "contains_coordinates"),
        (GOOD_SEARCH, DEFINITIVE + " <answer>", {}, "contains_tags"),
        (GOOD_SEARCH + " <|im_end|>", DEFINITIVE, {}, "contains_tags"),
        (GOOD_SEARCH + ' <img src=x onerror="alert(1)">', DEFINITIVE, {}, "contains_markup"),
        (GOOD_SEARCH + " <!-- hidden -->", DEFINITIVE, {}, "contains_markup"),
        (GOOD_SEARCH + " &lt;script&gt;", DEFINITIVE, {}, "contains_markup"),
        (GOOD_SEARCH, DEFINITIVE + " See [the atlas](https://example.org).", {}, "contains_markup"),
        (GOOD_SEARCH, DEFINITIVE + " ![x](javascript:alert)", {}, "contains_markup"),
        (GOOD_SEARCH + " ```", DEFINITIVE, {}, "contains_markup"),
        (GOOD_SEARCH + " Scanned on 12/03/2024.", DEFINITIVE, {}, "contains_phi_like_text"),
        (GOOD_SEARCH + " Patient Mr. Smith, MRN 12345678.", DEFINITIVE, {}, "contains_phi_like_text"),
        (GOOD_SEARCH + " \x07", DEFINITIVE, {}, "control_characters"),
    ],
)
def test_each_failure_has_its_reason(search, diagnosis, kwargs, reason):
    assert reason in problems(search, diagnosis, **kwargs)


def test_own_label_phrases_are_not_a_contradiction():
    """'Very hypoechoic' contains 'hypoechoic' (another value): blanking the label first avoids a false alarm."""
    diagnosis = "The nodule is clearly darker than the strap muscles: very hypoechoic."
    found = problems(
        "I scan the thyroid lobe from top to bottom and find one nodule in the centre of the image, so I zoom in.",
        diagnosis,
        organ="thyroid",
        attribute="echogenicity",
        label="Very hypoechoic",
    )
    assert found == []
    contradicted = problems(
        "I scan the thyroid lobe from top to bottom and find one nodule in the centre of the image, so I zoom in.",
        "The nodule is clearly darker than the parenchyma: Hypoechoic rather than very hypoechoic.",
        organ="thyroid",
        attribute="echogenicity",
        label="Hypoechoic",
    )
    assert contradicted == ["diagnosis_contradicts_label"]


def all_requests():
    for organ in registered_organs():
        for name, attribute in load_vocabulary(organ).attributes.items():
            for label in attribute.values:
                for confidence in (0, 1):
                    for box in ((10, 10, 60, 40), (150, 120, 380, 300)):
                        yield request(label, confidence, organ, name).model_copy(update={"bbox_2d": box})


def test_template_rationales_pass_the_validator_and_carry_the_tone():
    backend = TemplateBackend(BUNDLE)
    cautious = BUNDLE.tone["cautious"]
    checked = 0
    for req in all_requests():
        for seed in range(4):
            reply = backend.reply(req, seed)
            rationale, found = check_reply(json.dumps(reply), CheckContext(request=req, bundle=BUNDLE))
            assert found == [], (req.organ, req.attribute, req.label, req.confidence, reply, found)
            has_cautious = bool(contains_any(rationale.diagnosis, cautious))
            assert has_cautious == (req.confidence == 0), reply
            checked += 1
    assert checked > 800


def test_template_backend_is_deterministic_and_varies_with_the_seed():
    backend = TemplateBackend(BUNDLE)
    req = request()
    assert backend.reply(req, 0) == backend.reply(req, 0)
    assert len({json.dumps(backend.reply(req, seed)) for seed in range(10)}) > 5


def test_guidance_and_templates_carry_no_tone_word():
    """Evidence and search phrases are shared by both tones: a tone word there would break one of them."""
    words = BUNDLE.tone["definitive"] + BUNDLE.tone["cautious"]
    values = [v for organ in BUNDLE.guidance.values() for a in organ.values() for v in a["values"].values()]
    texts = [t for v in values for t in v["evidence"]]
    texts += [p for slot in BUNDLE.template["search"].values() for p in slot]
    texts += [a["look_for"] for organ in BUNDLE.guidance.values() for a in organ.values()]
    offending = [(t, contains_any(t, words)) for t in texts if contains_any(t, words)]
    assert offending == []


def test_every_vocabulary_value_has_guidance():
    for organ in registered_organs():
        for name, attribute in load_vocabulary(organ).attributes.items():
            for label in attribute.values:
                assert BUNDLE.evidence(organ, name, label)


def test_messages_carry_both_images_question_label_tone_and_exemplars():
    req = request(confidence=0)
    messages = render_messages(
        BUNDLE, req, seed=0, image_urls=("data:image/png;base64,AAA", "data:image/png;base64,BBB")
    )
    system, user = messages
    assert "cautious" in system["content"] and "hypoechoic" in system["content"].lower()
    parts = user["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    text = parts[2]["text"]
    assert req.question in text and "Hypoechoic" in text and "disagreed" in text
    assert re.search(r"Examples of the expected style \(cautious tone", text)
    repair = render_repair(BUNDLE, '{"search": "x"}', ["missing_cautious_tone"])
    assert repair[0]["role"] == "assistant" and "missing cautious tone" in repair[1]["content"]


def test_exemplar_sets_differ_between_seeds():
    sets = {tuple(e["diagnosis"] for e in BUNDLE.exemplars_for("definitive", seed)) for seed in range(8)}
    assert len(sets) > 1


def test_prose_with_comparison_signs_is_not_markup():
    """'<' and '>' in prose (a size comparison) are not a tag: only markup is refused."""
    assert "contains_markup" not in problems(GOOD_SEARCH + " It is < 1 cm and > 5 mm wide.", DEFINITIVE)
