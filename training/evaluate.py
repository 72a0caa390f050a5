"""Evaluation harness, local backend: the two-turn zoom protocol of `schemas/evaluation.py` against a transformers
checkpoint with its PEFT adapters, in the training environment (the curation side runs it as a job; an
OpenAI-compatible endpoint is evaluated in the curation environment by `flows/evaluation/endpoint.py`).
Output: one `SampleResult` per sample (`schemas/metrics.py`), written as JSON Lines.

    python -m training.evaluate --release DIR --split test --model PATH --out FOLDER   # local model
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image

from schemas.dataset import EVAL_COLUMNS, split_shards
from schemas.evaluation import (
    EvalRow,
    RolloutSettings,
    eval_rows,
    evaluate_rows,
    write_results,
)
from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS


def iter_eval_rows(release: Path, *, split: str, config: str = "all", max_rows: int | None = None) -> Iterator[EvalRow]:
    """Rows of one split of a release folder, read shard by shard (no `datasets` needed)."""
    shards = split_shards(release, config, split)
    batches = (
        b for shard in shards for b in pq.ParquetFile(shard).iter_batches(batch_size=32, columns=list(EVAL_COLUMNS))
    )
    return eval_rows((row for batch in batches for row in batch.to_pylist()), max_rows=max_rows)


# ------------------------------------------------------------------------------------------ backends
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


def progress_bar(futures: Sequence[Any]) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(futures, desc="evaluate", unit="sample")


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
    write_results(evaluate_rows(backend, rows, settings, progress=progress_bar), args.out)
    print(json.dumps({"samples": len(rows), "results": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
