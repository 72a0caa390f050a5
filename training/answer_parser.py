"""Fallback answer parsing through the teacher endpoint (the paper parses answers with Qwen2.5-VL-72B).

Used only when a rollout's `<answer>` JSON cannot be read and the recipe names `answer_parser_url`. The
reply must be one of the attribute's words or "none"; anything else counts as no answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable

PROMPT = (
    "Below is a model's answer about the '{key}' of a lesion in an ultrasound image. Reply with the value it "
    "gives for '{key}', copied exactly, or with the single word none if it gives no value.\n\n{text}"
)


def openai_answer_parser(base_url: str, model: str, *, timeout_s: float = 30.0) -> Callable[[str, str], str | None]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get("LOOKCLOSER_TEACHER_API_KEY", "none"), timeout=timeout_s)

    def parse(text: str, key: str) -> str | None:
        try:
            reply = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPT.format(key=key, text=text[:2000])}],
                temperature=0.0,
                max_tokens=16,
            )
        except Exception:  # an unreachable parser must not stop training: the rollout has no answer
            return None
        answer = (reply.choices[0].message.content or "").strip().strip(".\"'")
        return None if not answer or answer.lower() == "none" else answer

    return parse
