"""Evaluation harness: the two-turn zoom interaction against a model, on the rows of one release split.

Per sample: the system prompt and the question with the full image (the release's model-frame image) go
to the model; a `<tool_call>{"bbox_2d": [...]}</tool_call>` in its reply is executed with the shared crop
function of `schemas/` and the crop comes back as the next user turn; the answer is read from the second
reply's `<answer>` JSON. A reply without a valid tool call ends the rollout there (its answer, if any, is
read from that reply). `tool=False` is the single-turn baseline of the paper's tables: the question, then
the answer.

Two decodings per sample: greedy (T = 0, one rollout) for Acc and mIoU, and N rollouts at T (0.7) for the
uncertainty metrics. The N first turns are one request with `n = N` when the endpoint supports `n`
(vLLM does); each rollout then continues its own conversation.

Backends: `OpenAIEndpoint` (any OpenAI-compatible server, e.g. vLLM serving a trained checkpoint) and
`LocalModel` (transformers, in the training environment). Output: one `SampleResult` per sample
(`training/metrics.py`), written as JSON Lines, then the report (`write_report`).

    python -m training.evaluate --release DIR --split test --model PATH --out FOLDER   # local model
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq
from PIL import Image

from schemas.crop import crop
from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from schemas.trajectory import ZOOM_PROMPT, extract_tool_call
from schemas.vocabulary import load_vocabulary
from training.data import shard_paths
from training.metrics import SampleResult
from training.rewards import answer_from_json

COLUMNS = ["id", "organ", "attribute", "label", "confidence", "bbox", "images", "messages", "split"]


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


def iter_eval_rows(release: Path, *, split: str, config: str = "all", max_rows: int | None = None) -> Iterator[EvalRow]:
    """Rows of one split of a release folder, read shard by shard (no `datasets` needed)."""
    count = 0
    for shard in shard_paths(release, config):
        if not shard.name.startswith(f"{split}-"):
            continue
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=32, columns=COLUMNS):
            for row in batch.to_pylist():
                if max_rows is not None and count >= max_rows:
                    return
                texts = [
                    "".join(p.get("text") or "" for p in m["content"] if p["type"] == "text") for m in row["messages"]
                ]
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
                count += 1


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
    backend: Backend, rows: Sequence[EvalRow], settings: RolloutSettings, *, concurrency: int = 1, progress: bool = True
) -> list[SampleResult]:
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(evaluate_row, backend, row, settings) for row in rows]
        return [f.result() for f in tqdm(futures, desc="evaluate", unit="sample", disable=not progress)]


# ------------------------------------------------------------------------------------------ backends
class OpenAIEndpoint:
    """An OpenAI-compatible chat endpoint; `n` in one request when the server takes it, else one request each."""

    def __init__(
        self, base_url: str, model: str, *, api_key: str = "none", timeout_s: float = 300.0, seed: int = 0
    ) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=2)
        self.model, self.seed = model, seed
        self.supports_n = True
        self.requests = 0

    def _create(self, messages: list[dict[str, Any]], n: int, temperature: float, max_tokens: int) -> list[str]:
        self.requests += 1
        reply = self.client.chat.completions.create(
            model=self.model, messages=messages, n=n, temperature=temperature, max_tokens=max_tokens, seed=self.seed
        )
        return [choice.message.content or "" for choice in reply.choices]

    def generate(self, messages: list[dict[str, Any]], *, n: int, temperature: float, max_tokens: int) -> list[str]:
        from openai import BadRequestError

        if n > 1 and self.supports_n:
            try:
                texts = self._create(messages, n, temperature, max_tokens)
                if len(texts) == n:
                    return texts
            except BadRequestError:
                pass
            self.supports_n = False  # the server ignored or refused n: one request per rollout from now on
        return [text for _ in range(n) for text in self._create(messages, 1, temperature, max_tokens)]


class LocalModel:
    """A transformers Qwen2.5-VL checkpoint run in this process, with PEFT adapters merged in order (SFT, then GRPO:
    GRPO's adapter was trained on the SFT-merged weights)."""

    def __init__(self, path: str, *, min_pixels: int, max_pixels: int, adapters: Sequence[str] = ()) -> None:
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        from training.arguments import resolve_model
        from training.zoom_format import load_processor

        path = resolve_model(path)
        self.torch = torch
        self.processor = load_processor(path, min_pixels=min_pixels, max_pixels=max_pixels)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval()
        for adapter in adapters:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).merge_and_unload().eval()

    def generate(self, messages: list[dict[str, Any]], *, n: int, temperature: float, max_tokens: int) -> list[str]:
        converted = []
        for message in messages:
            if isinstance(message["content"], str):
                converted.append({"role": message["role"], "content": [{"type": "text", "text": message["content"]}]})
                continue
            parts = []
            for part in message["content"]:
                if part["type"] == "image_url":
                    raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    parts.append({"type": "image", "image": Image.open(io.BytesIO(raw)).convert("RGB")})
                else:
                    parts.append(part)
            converted.append({"role": message["role"], "content": parts})
        inputs = self.processor.apply_chat_template(
            converted, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with self.torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_tokens, num_return_sequences=n, **sampling)
        prompt = inputs["input_ids"].shape[1]
        return [self.processor.tokenizer.decode(seq[prompt:], skip_special_tokens=True) for seq in out]


# ------------------------------------------------------------------------------------------ files
def write_results(results: Sequence[SampleResult], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(asdict(r)) + "\n" for r in results))
    partial.replace(path)
    return path


def read_results(path: Path) -> list[SampleResult]:
    return [SampleResult(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """Local-model rollouts (the training environment), written as results.jsonl for the report."""
    parser = argparse.ArgumentParser(description="evaluate a local model on a release split")
    parser.add_argument("--release", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", required=True)
    parser.add_argument("--adapter", action="append", default=[], help="repeatable: merged in order")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--settings", default="{}", help="RolloutSettings as JSON")
    parser.add_argument("--max-rows", type=int)
    args = parser.parse_args(argv)
    settings = RolloutSettings(**json.loads(args.settings))
    backend = LocalModel(args.model, min_pixels=args.min_pixels, max_pixels=args.max_pixels, adapters=args.adapter)
    rows = list(iter_eval_rows(args.release, split=args.split, max_rows=args.max_rows))
    write_results(evaluate_rows(backend, rows, settings), args.out)
    print(json.dumps({"samples": len(rows), "results": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
