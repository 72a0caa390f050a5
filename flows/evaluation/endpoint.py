"""Evaluation against an OpenAI-compatible endpoint (vLLM serving a trained checkpoint), in the curation
environment: the release's rows, and the backend the protocol of `schemas/evaluation.py` talks to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from schemas.dataset import EVAL_COLUMNS, split_shards
from schemas.evaluation import EvalRow, eval_rows


def iter_eval_rows(release: Path, *, split: str, config: str = "all", max_rows: int | None = None) -> Iterator[EvalRow]:
    """Rows of one split of a release folder, read shard by shard."""
    shards = split_shards(release, config, split)
    batches = (
        b for shard in shards for b in pq.ParquetFile(shard).iter_batches(batch_size=32, columns=list(EVAL_COLUMNS))
    )
    return eval_rows((row for batch in batches for row in batch.to_pylist()), max_rows=max_rows)


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
