"""OpenAI-compatible endpoints (vLLM replicas): spread requests, time out, retry with backoff and jitter.

Retried: timeouts, connection errors, 429 and 5xx, and replies whose body cannot be read. Not
retried: other 4xx (the request itself is wrong; repeating it cannot help). A request that is
repeated is harmless: chat completions have no side effects, and the caller caches what succeeded.
The API key is only handed to the client; it never appears in logs or errors.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

log = logging.getLogger(__name__)

ITEM_HEADER = "X-Lookcloser-Item"  # lets a server log (and the scripted test server script) per item


class TeacherUnavailableError(Exception):
    """Every retry of a request failed with a transient error."""

    reason = "teacher_unavailable"


class EmptyReplyError(Exception):
    """A 200 reply that carries no choices."""


class TeacherRejectedError(Exception):
    """The server refused the request itself (4xx other than 429)."""

    reason = "teacher_rejected_request"


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    backoff_s: float = 0.5
    backoff_cap_s: float = 30.0
    timeout_s: float = 120.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base · 2^attempt)] (spreads retries of a failed burst)."""
        return rng.uniform(0, min(self.backoff_cap_s, self.backoff_s * 2**attempt))


@dataclass
class PoolStats:
    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images_per_request: Counter[int] = field(default_factory=Counter)  # what was sent: both pictures, every time


def _image_parts(messages: list[dict[str, Any]]) -> int:
    return sum(
        1
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    )


def _retry_kind(err: Exception) -> str | None:
    """The transient failure an exception stands for, or None if retrying cannot help."""
    if isinstance(err, openai.APITimeoutError):
        return "timeout"
    if isinstance(err, openai.APIConnectionError):
        return "connection_error"
    if isinstance(err, openai.RateLimitError):
        return "rate_limited"
    if isinstance(err, openai.InternalServerError):
        return "server_error"
    if isinstance(err, openai.APIStatusError):
        return "server_error" if err.status_code >= 500 else None
    if isinstance(err, openai.APIResponseValidationError | json.JSONDecodeError | EmptyReplyError):
        return "unreadable_response"
    return None


class EndpointPool:
    """One AsyncOpenAI client per base URL; each request goes to the endpoint with the fewest in flight."""

    def __init__(self, base_urls: list[str], *, api_key: str | None, retry: RetryPolicy, seed: int = 0) -> None:
        if not base_urls:
            raise ValueError("no teacher endpoint: set LOOKCLOSER_TEACHER_BASE_URLS (comma-separated)")
        self.base_urls = [str(u).rstrip("/") for u in base_urls]
        self.clients = [
            AsyncOpenAI(base_url=url, api_key=api_key or "EMPTY", max_retries=0, timeout=retry.timeout_s)
            for url in self.base_urls
        ]
        self.retry = retry
        self.in_flight = [0] * len(self.clients)
        self.stats = PoolStats()
        self._rng = random.Random(seed)
        self._round_robin = itertools.count()

    @property
    def total_in_flight(self) -> int:
        return sum(self.in_flight)

    def _pick(self, avoid: int | None) -> int:
        candidates = [i for i in range(len(self.clients)) if i != avoid] or [0]
        least = min(self.in_flight[i] for i in candidates)
        tied = [i for i in candidates if self.in_flight[i] == least]
        return tied[next(self._round_robin) % len(tied)]

    async def chat(self, *, item: str, **kwargs: Any) -> Any:
        """One chat completion, retried on transient failures (on another replica when there is one)."""
        failed: int | None = None
        for attempt in range(self.retry.max_retries + 1):
            index = self._pick(failed)
            self.in_flight[index] += 1
            self.stats.requests += 1
            self.stats.images_per_request[_image_parts(kwargs.get("messages", []))] += 1
            try:
                response = await self.clients[index].chat.completions.create(
                    extra_headers={ITEM_HEADER: item}, **kwargs
                )
                if not getattr(response, "choices", None):
                    raise EmptyReplyError("reply without choices")
                if response.usage is not None:
                    self.stats.prompt_tokens += response.usage.prompt_tokens or 0
                    self.stats.completion_tokens += response.usage.completion_tokens or 0
                return response
            except Exception as err:  # classified below; anything unknown is re-raised
                kind = _retry_kind(err)
                if kind is None:
                    if isinstance(err, openai.APIStatusError):
                        raise TeacherRejectedError(f"HTTP {err.status_code} from teacher endpoint {index}") from None
                    raise
                self.stats.retries[kind] += 1
                failed = index
                if attempt == self.retry.max_retries:
                    raise TeacherUnavailableError(f"{kind} after {attempt + 1} attempts") from None
                delay = self.retry.delay(attempt, self._rng)
                if isinstance(err, openai.RateLimitError):
                    delay = max(delay, _retry_after(err))
                log.debug("teacher %s on endpoint %d (attempt %d); retrying in %.2fs", kind, index, attempt + 1, delay)
                await asyncio.sleep(delay)
            finally:
                self.in_flight[index] -= 1
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def _retry_after(err: openai.APIStatusError) -> float:
    try:
        return min(float(err.response.headers.get("retry-after", 0)), 60.0)
    except (TypeError, ValueError):
        return 0.0
