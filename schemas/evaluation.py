"""The paper's evaluation protocol (section 3.2), pure: the two-turn zoom interaction against any backend.

Per sample: the system prompt and the question with the full image (the release's model-frame image) go
to the model; a `<tool_call>{"bbox_2d": [...]}</tool_call>` in its reply is executed with the shared crop
function (`schemas/crop.py`) and the crop comes back as the next user turn; the answer is read from the
second reply's `<answer>` JSON. A reply without a valid tool call ends the rollout there (its answer, if
any, is read from that reply). `tool=False` is the single-turn baseline of the paper's tables.

Two decodings per sample: greedy (T = 0, one rollout) for Acc and mIoU, and N rollouts at T (0.7) for the
uncertainty metrics. Backends: an OpenAI-compatible endpoint (`flows/evaluation/endpoint.py`, in the
curation environment) and a local checkpoint (`training/evaluate.py`, in the training environment); both
read a release's rows with `eval_rows` and write `SampleResult`s (`schemas/metrics.py`) as JSON Lines.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from schemas.crop import crop
from schemas.metrics import SampleResult
from schemas.trajectory import ZOOM_PROMPT, answer_from_json, extract_tool_call
from schemas.vocabulary import load_vocabulary


@dataclass(frozen=True)
class RolloutSettings:
    rollouts: int = 8
    temperature: float = 0.7
    max_tokens: int = 512
    tool: bool = True
    crop_padding: float = 0.0
    seed: int = 0


class Backend(Protocol):
    def generate(self, messages: list[dict[str, Any]], *, n: int, temperature: float, max_tokens: int) -> list[str]:
        """`n` replies to the conversation (OpenAI message format, images as data URIs)."""
        ...


@dataclass
class EvalRow:
    sample_id: str
    organ: str
    answer_key: str
    label: str
    confidence: int
    gold_box: list[float]
    image: Image.Image
    system: str
    question: str


def eval_rows(rows: Iterable[dict[str, Any]], *, max_rows: int | None = None) -> Iterator[EvalRow]:
    """Published rows (the `EVAL_COLUMNS` of each) as the harness reads them: the system prompt, the question, the
    full model-frame image, the label, c and the consensus box."""
    for count, row in enumerate(rows):
        if max_rows is not None and count >= max_rows:
            return
        texts = ["".join(p.get("text") or "" for p in m["content"] if p["type"] == "text") for m in row["messages"]]
        yield EvalRow(
            sample_id=row["id"],
            organ=row["organ"],
            answer_key=load_vocabulary(row["organ"]).attribute(row["attribute"]).answer_key,
            label=row["label"],
            confidence=row["confidence"],
            gold_box=[float(v) for v in row["bbox"]],
            image=Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB"),
            system=texts[0],
            question=texts[1],
        )


def data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _user(image: Image.Image, text: str) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": data_uri(image)}}, {"type": "text", "text": text}],
    }


def first_turn(text: str) -> str:
    """The assistant's first turn as the conversation keeps it: up to its tool call's end."""
    end = text.find("</tool_call>")
    return text[: end + len("</tool_call>")] if end >= 0 else text


def rollouts(backend: Backend, row: EvalRow, settings: RolloutSettings, *, n: int, temperature: float) -> list[dict]:
    """`n` two-turn rollouts of one sample: each its box (or None) and its answer (or None)."""
    opening = [{"role": "system", "content": row.system}, _user(row.image, row.question)]
    firsts = backend.generate(opening, n=n, temperature=temperature, max_tokens=settings.max_tokens)
    results = []
    for text in firsts:
        box = extract_tool_call(text) if settings.tool else None
        if box is None:
            results.append({"box": None, "answer": answer_from_json(text, row.answer_key), "zoomed": False})
            continue
        zoomed, _ = crop(row.image, box, padding=settings.crop_padding)
        follow = [*opening, {"role": "assistant", "content": first_turn(text)}, _user(zoomed, ZOOM_PROMPT)]
        second = backend.generate(follow, n=1, temperature=temperature, max_tokens=settings.max_tokens)[0]
        results.append({"box": box, "answer": answer_from_json(second, row.answer_key), "zoomed": True})
    return results


def evaluate_row(backend: Backend, row: EvalRow, settings: RolloutSettings) -> SampleResult:
    greedy = rollouts(backend, row, settings, n=1, temperature=0.0)[0]
    sampled = rollouts(backend, row, settings, n=settings.rollouts, temperature=settings.temperature)
    return SampleResult(
        sample_id=row.sample_id,
        organ=row.organ,
        label=row.label,
        confidence=row.confidence,
        gold_box=row.gold_box,
        greedy_answer=greedy["answer"],
        greedy_box=greedy["box"],
        sampled_answers=[r["answer"] for r in sampled],
    )


def evaluate_rows(
    backend: Backend,
    rows: Sequence[EvalRow],
    settings: RolloutSettings,
    *,
    concurrency: int = 1,
    progress: Callable[[list[Future[SampleResult]]], Iterable[Future[SampleResult]]] = iter,
) -> list[SampleResult]:
    """Every row's rollouts, `concurrency` rows at a time; `progress` wraps the futures (a progress bar)."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(evaluate_row, backend, row, settings) for row in rows]
        return [f.result() for f in progress(futures)]


def write_results(results: Sequence[SampleResult], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(asdict(r)) + "\n" for r in results))
    partial.replace(path)
    return path


def read_results(path: Path) -> list[SampleResult]:
    return [SampleResult(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
