"""A scripted OpenAI-compatible chat-completions server for fault-injection tests and benchmarks.

``ScriptedOpenAIServer`` runs uvicorn in a daemon thread on a free 127.0.0.1 port and serves

* ``POST /v1/chat/completions`` (non-streaming only; ``stream: true`` is answered with HTTP 400),
* ``GET /v1/models`` (lists the one scripted model) and ``GET /health``.

A good reply's message content comes from a ``Responder``: ``responder(item, request_json) -> content``, where
``item`` is the request header ``X-Lookcloser-Item`` ("" when absent). For every choice (``n`` of them) the
responder is called once with a copy of the request JSON that carries the extra key ``"_choice_index"`` (0, 1, ...,
also present when ``n`` is 1), so a responder may vary its choices. Responders run on the server's event loop: keep
them fast and free of blocking I/O.

Faults (``FaultPlan``): each request gets exactly one *kind*, recorded in ``ScriptedOpenAIServer.log``:

``server_error``
    HTTP 500 with an OpenAI-style error body (``{"error": {"message", "type", "param", "code"}}``).
``timeout``
    The server sleeps ``hang_s`` before answering (with a good reply), so a client with a shorter timeout gives up.
``rate_limited``
    HTTP 429, header ``Retry-After: 0``, OpenAI-style error body.
``malformed_json``
    HTTP 200 and a valid envelope, but each choice's content is the good content cut short (not valid JSON).
``wrong_tone``
    HTTP 200, content from ``tone_flip_responder`` instead of ``responder`` (from ``responder`` when none is given).
``ok``
    HTTP 200 with the responder's content.

The decision is deterministic and does not depend on timing. The server keys a request by
``(item, body_hash)``, ``body_hash`` being the SHA-256 of the canonical JSON body (sorted keys, no spaces), and
keeps a per-key counter: ``attempt`` is the number of earlier requests with the same key. Two independent draws,
each a uniform ``u`` in [0, 1) taken from the first 8 bytes of a SHA-256 digest, decide the kind:

1. Transport draw, ``sha256(f"{seed}|{item}|{body_hash}|{attempt}")``, depends on the attempt: by cumulative
   probability in the order ``server_error``, ``timeout``, ``rate_limited``. A retried identical request draws
   afresh each time, so transport faults clear after a few retries.
2. Only when no transport fault was drawn, content draw, ``sha256(f"content|{seed}|{item}|{body_hash}")``, does
   *not* depend on the attempt: by cumulative probability in the order ``malformed_json``, ``wrong_tone``, each
   probability divided by ``1 - (server_error + timeout + rate_limited)`` so that the overall rates match the
   plan. A retried identical request therefore meets the same content fault every time it gets through; a repair
   or regeneration request has a different body (hence a different hash) and may pass.

Over many distinct requests the observed fraction of each kind approaches the plan's fraction. Concurrent
identical requests are numbered in the order the server receives them. Every reply except ``timeout`` waits
``latency_s`` (``asyncio.sleep``) before it is sent. Requests that are not JSON objects, or ask for streaming or an
invalid ``n``, get HTTP 400, are logged with kind ``bad_request`` and do not count as attempts.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Responder = Callable[[str, dict[str, Any]], str]
"""``(item_header, request_json) -> message content`` for a good reply."""

ITEM_HEADER = "X-Lookcloser-Item"
TRANSPORT_KINDS = ("server_error", "timeout", "rate_limited")
CONTENT_KINDS = ("malformed_json", "wrong_tone")
KINDS = ("ok", *TRANSPORT_KINDS, *CONTENT_KINDS)


@dataclass
class FaultPlan:
    """Fraction of requests that get each fault; the fractions must add up to at most 1."""

    server_error: float = 0.0  # HTTP 500 with an OpenAI-style error JSON body
    timeout: float = 0.0  # sleep `hang_s` before answering (the client times out)
    malformed_json: float = 0.0  # HTTP 200, valid envelope, message content is not valid JSON
    wrong_tone: float = 0.0  # HTTP 200, content from `tone_flip_responder` instead of `responder`
    rate_limited: float = 0.0  # HTTP 429 with header Retry-After: 0
    hang_s: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        rates = [getattr(self, kind) for kind in (*TRANSPORT_KINDS, *CONTENT_KINDS)]
        if any(not 0.0 <= rate <= 1.0 for rate in rates):
            raise ValueError(f"fault fractions must lie in [0, 1]: {self}")
        if sum(rates) > 1.0 + 1e-9:
            raise ValueError(f"fault fractions add up to more than 1: {self}")
        if self.hang_s < 0:
            raise ValueError(f"hang_s must not be negative: {self.hang_s}")


@dataclass
class RequestLog:
    """One received request and the kind of reply it was given."""

    item: str  # value of the request header X-Lookcloser-Item ("" if absent)
    kind: str  # "ok" | "server_error" | "timeout" | "malformed_json" | "wrong_tone" | "rate_limited" | "bad_request"
    n: int
    temperature: float | None
    seed: int | None
    has_response_format: bool
    images: int  # number of image_url parts over all messages
    time: float  # time.monotonic() when received
    attempt: int = 0  # earlier requests with the same (item, body_hash)
    body_hash: str = ""  # SHA-256 of the canonical JSON body


def canonical_body_hash(body: Any) -> str:
    """SHA-256 (hex) of ``body`` as canonical JSON: sorted keys, no whitespace, non-ASCII kept."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _uniform(key: str) -> float:
    """A uniform number in [0, 1) from the first 8 bytes of sha256(key)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def fault_kind(plan: FaultPlan, item: str, body_hash: str, attempt: int) -> str:
    """The kind of reply for the ``attempt``-th request (0-based) with this item and body hash (module docstring)."""
    u = _uniform(f"{plan.seed}|{item}|{body_hash}|{attempt}")
    edge = 0.0
    for kind in TRANSPORT_KINDS:
        edge += getattr(plan, kind)
        if u < edge:
            return kind
    passing = 1.0 - edge  # probability that no transport fault was drawn
    if passing <= 0.0:
        return "ok"  # unreachable in practice: u < 1 <= edge
    u = _uniform(f"content|{plan.seed}|{item}|{body_hash}")
    edge = 0.0
    for kind in CONTENT_KINDS:
        edge += getattr(plan, kind) / passing
        if u < edge:
            return kind
    return "ok"


def _count_images(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    count = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            count += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")
    return count


def _malformed(content: str) -> str:
    """``content`` cut short so that it is no longer valid JSON."""
    cut = content[: len(content) // 2]
    try:
        json.loads(cut)
    except ValueError:
        return cut
    return '{"search": "' + cut  # the cut was empty or still parsed (e.g. a bare number)


def _error(
    status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class ScriptedOpenAIServer:
    """An OpenAI-compatible chat-completions server whose replies and faults are scripted (module docstring)."""

    def __init__(
        self,
        responder: Responder,
        *,
        faults: FaultPlan | None = None,
        latency_s: float = 0.0,
        tone_flip_responder: Responder | None = None,
        model: str = "scripted",
        api_key: str | None = None,
    ) -> None:
        if latency_s < 0:
            raise ValueError(f"latency_s must not be negative: {latency_s}")
        self.responder = responder
        self.faults = faults if faults is not None else FaultPlan()
        self.latency_s = latency_s
        self.tone_flip_responder = tone_flip_responder
        self.api_key = api_key  # when set, requests without `Authorization: Bearer <api_key>` get 401
        self.model = model
        self._lock = threading.Lock()
        self._log: list[RequestLog] = []
        self._attempts: dict[tuple[str, str], int] = {}
        self._ids = itertools.count()
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

    # ----------------------------------------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``; available once started."""
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        """Serve on a free 127.0.0.1 port in a daemon thread; return once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (else keep-alive replies wait ~40 ms)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        try:
            import httptools  # noqa: F401

            http = "httptools"
        except ImportError:
            http = "h11"
        config = uvicorn.Config(
            self.app,
            loop="asyncio",
            http=http,
            lifespan="off",
            log_config=None,  # leave the host process's logging alone
            log_level="warning",
            access_log=False,
            limit_concurrency=None,
            backlog=4096,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="scripted-openai", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15.0
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the scripted OpenAI server failed to start")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the scripted OpenAI server did not start within 15 s")
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", self._port), timeout=5.0):
            pass
        return self

    def stop(self) -> None:
        """Stop serving without waiting for hanging requests; idempotent."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait for connections still inside a `timeout` hang
        self._thread.join(timeout=10.0)
        self._server = None

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------------- log

    @property
    def log(self) -> list[RequestLog]:
        """A copy of the request log, in the order the requests were received."""
        with self._lock:
            return list(self._log)

    def reset_log(self) -> None:
        """Empty the request log (the per-request attempt counters are kept, so fault decisions continue)."""
        with self._lock:
            self._log.clear()

    def _record(self, entry: RequestLog) -> None:
        with self._lock:
            self._log.append(entry)

    def _next_attempt(self, item: str, body_hash: str) -> int:
        with self._lock:
            attempt = self._attempts.get((item, body_hash), 0)
            self._attempts[(item, body_hash)] = attempt + 1
            return attempt

    # ----------------------------------------------------------------------------------------------- endpoints

    async def _health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def _unauthorized(self, request: Request) -> JSONResponse | None:
        """401 when a key is required and the request does not carry it (like `vllm serve --api-key`)."""
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "invalid api key", "invalid_request_error", "invalid_api_key")
        return None

    async def _models(self, request: Request) -> JSONResponse:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "lookcloser-tests"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _chat_completions(self, request: Request) -> JSONResponse:
        received = time.monotonic()
        item = request.headers.get(ITEM_HEADER, "")
        if (refused := self._unauthorized(request)) is not None:
            return refused
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problem = self._bad_request(body)
        if problem is not None:
            self._record(RequestLog(item, "bad_request", 0, None, None, False, 0, received))
            return _error(400, problem, "invalid_request_error", None)
        assert isinstance(body, dict)
        n = int(body.get("n") or 1)
        temperature = body.get("temperature")
        seed = body.get("seed")
        # the raw bytes identify a request as well (a client serialises the same request the same way) and
        # hashing them is several times cheaper than re-serialising a body that carries two images
        body_hash = hashlib.sha256(raw).hexdigest()
        attempt = self._next_attempt(item, body_hash)
        kind = fault_kind(self.faults, item, body_hash, attempt)
        self._record(
            RequestLog(
                item=item,
                kind=kind,
                n=n,
                temperature=float(temperature) if temperature is not None else None,
                seed=int(seed) if seed is not None else None,
                has_response_format=body.get("response_format") is not None,
                images=_count_images(body),
                time=received,
                attempt=attempt,
                body_hash=body_hash,
            )
        )

        try:
            await asyncio.sleep(self.faults.hang_s if kind == "timeout" else self.latency_s)
        except asyncio.CancelledError:  # stop() cancels hanging requests: end them without a logged traceback
            return _error(503, "The scripted server is stopping.", "server_error", None)
        if kind == "server_error":
            return _error(
                500, "The server had an error while processing your request (scripted).", "server_error", None
            )
        if kind == "rate_limited":
            return _error(
                429,
                "Rate limit reached (scripted).",
                "requests",
                "rate_limit_exceeded",
                headers={"Retry-After": "0"},
            )

        responder = self.responder
        if kind == "wrong_tone" and self.tone_flip_responder is not None:
            responder = self.tone_flip_responder
        contents = [responder(item, {**body, "_choice_index": index}) for index in range(n)]
        if kind == "malformed_json":
            contents = [_malformed(content) for content in contents]
        prompt_tokens = _tokens(json.dumps(body.get("messages", [])))
        completion_tokens = sum(_tokens(content) for content in contents)
        return JSONResponse(
            {
                "id": f"chatcmpl-scripted-{next(self._ids)}-{body_hash[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or self.model,
                "choices": [
                    {
                        "index": index,
                        "message": {"role": "assistant", "content": content},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                    for index, content in enumerate(contents)
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    @staticmethod
    def _bad_request(body: Any) -> str | None:
        """Why ``body`` cannot be answered, or None."""
        if not isinstance(body, dict):
            return "the request body must be a JSON object"
        if not isinstance(body.get("messages"), list):
            return "'messages' must be a list"
        if body.get("stream"):
            return "streaming is not supported by the scripted server"
        n = body.get("n")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            return f"'n' must be a positive integer, not {n!r}"
        for key in ("temperature", "seed"):
            value = body.get(key)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                return f"{key!r} must be a number, not {value!r}"
        return None


__all__ = [
    "CONTENT_KINDS",
    "ITEM_HEADER",
    "KINDS",
    "TRANSPORT_KINDS",
    "FaultPlan",
    "RequestLog",
    "Responder",
    "ScriptedOpenAIServer",
    "canonical_body_hash",
    "fault_kind",
]
