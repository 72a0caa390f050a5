"""Teacher backends: the offline `template` one and the real `openai` one (vLLM replicas).

A backend answers one `TeacherCall` with `n` candidate replies (JSON text). It never sees the
answer box or writes the answer: code inserts those (DESIGN §5). Every reply is recorded with the
backend, model and prompt version, so nothing pretends a template rationale came from a model.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from flows.teacher.client import EndpointPool
from flows.teacher.prompting import (
    RATIONALE_SCHEMA,
    PromptBundle,
    TeacherRequest,
    box_location,
    box_size_word,
    render_messages,
    render_repair,
)

ImageUrls = Callable[[TeacherRequest], Awaitable[tuple[str, str]]]  # data URIs: model-frame image, crop


@dataclass(frozen=True)
class TeacherCall:
    request: TeacherRequest
    seed: int
    repair_of: str | None = None  # the previous reply, when this call asks for a repair
    problems: tuple[str, ...] = ()


class Backend(Protocol):
    name: str
    model: str
    cacheable: bool  # replies worth keeping in the durable cache (a template is cheaper to redo)

    def plan(self, requests: Sequence[TeacherRequest]) -> None:
        """The order the requests will come in (lets a backend prepare inputs ahead)."""

    async def prefetch(self) -> None:
        """Prepare planned inputs ahead of need, until cancelled or done."""

    async def complete(self, call: TeacherCall) -> list[str]: ...


class TemplateBackend:
    """Deterministic, offline: fills the bundle's tone-specific phrase templates from the guidance."""

    name = "template"
    model = "none"
    cacheable = False

    def __init__(self, bundle: PromptBundle) -> None:
        self.bundle = bundle

    def reply(self, request: TeacherRequest, seed: int) -> dict[str, str]:
        rng = random.Random(f"{self.bundle.version}|{request.item_key}|{request.label}|{request.confidence}|{seed}")
        phrases = self.bundle.template
        words = self.bundle.organ_words(request.organ)
        guidance = self.bundle.attribute_guidance(request.organ, request.attribute)
        fields = {
            **words,
            "size": box_size_word(request.bbox_2d, request.model_size, phrases["sizes"]),
            "location": box_location(request.bbox_2d, request.model_size),
            "look_for": guidance["look_for"],
            "evidence": rng.choice(self.bundle.evidence(request.organ, request.attribute, request.label)),
            "attribute": request.attribute.replace("_", " "),
            "label": request.label,
        }
        search = " ".join(
            rng.choice(phrases["search"][slot]).format(**fields) for slot in ("opener", "finding", "intent")
        )
        tone = phrases["diagnosis"][request.tone]
        diagnosis = " ".join(rng.choice(tone[slot]).format(**fields) for slot in ("lead", "closer"))
        return {"search": search, "diagnosis": diagnosis}

    def plan(self, requests: Sequence[TeacherRequest]) -> None:
        pass  # nothing to prepare

    async def prefetch(self) -> None:
        pass

    async def complete(self, call: TeacherCall) -> list[str]:
        return [json.dumps(self.reply(call.request, call.seed))]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    n: int = 2
    max_tokens: int = 512


class OpenAIBackend:
    """Qwen2.5-VL behind OpenAI-compatible servers: two images, the JSON schema, `n` candidates, a seed."""

    name = "openai"
    cacheable = True

    def __init__(
        self, bundle: PromptBundle, pool: EndpointPool, model: str, images: ImageUrls, sampling: SamplingParams
    ) -> None:
        self.bundle, self.pool, self.model, self.images, self.sampling = bundle, pool, model, images, sampling

    def plan(self, requests: Sequence[TeacherRequest]) -> None:
        if hasattr(self.images, "plan"):
            self.images.plan(requests)

    async def prefetch(self) -> None:
        if hasattr(self.images, "prefetch"):
            await self.images.prefetch()

    def close(self) -> None:
        """Stop the image preparation workers (the endpoint pool is closed by its owner)."""
        if hasattr(self.images, "close"):
            self.images.close()

    async def messages(self, call: TeacherCall) -> list[dict]:
        image_urls = await self.images(call.request)
        messages = render_messages(self.bundle, call.request, seed=call.seed, image_urls=image_urls)
        if call.repair_of is not None:
            messages += render_repair(self.bundle, call.repair_of, list(call.problems))
        return messages

    async def complete(self, call: TeacherCall) -> list[str]:
        response = await self.pool.chat(
            item=f"{call.request.item_key}:{call.seed}:{'repair' if call.repair_of is not None else 'first'}",
            model=self.model,
            messages=await self.messages(call),
            n=self.sampling.n,
            temperature=self.sampling.temperature,
            max_tokens=self.sampling.max_tokens,
            seed=call.seed,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "zoom_rationale", "strict": True, "schema": RATIONALE_SCHEMA},
            },
        )
        return [choice.message.content or "" for choice in response.choices]
