"""The source registry: a source is registered by its entry in `provenance.yaml` (its licence and citation,
keyed by its kind) and its module `sources/<kind>.py`, which declares itself as `SOURCE` (a `SourceAdapter`:
its `iter_items`, whether it takes `--organ`, what its path is, which of its boxes pre-fill the readers'
tasks). The CLI's choices, the ingest stage's `IngestParams.kind` and the annotate stage's pre-annotations
are built from it. A module is imported on first use: a run pays only for its own adapter's imports.

Adding a source: its module here in `sources/` and its entry in `provenance.yaml`; nothing else.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml

from flows.ingest.sources.base import SourceAdapter

PROVENANCE_FILE = Path(__file__).with_name("provenance.yaml")


def _registered_kinds() -> tuple[str, ...]:
    return tuple(yaml.safe_load(PROVENANCE_FILE.read_text())["sources"])


KINDS: tuple[str, ...] = _registered_kinds()


@cache
def source_adapter(kind: str) -> SourceAdapter:
    """The declaration of the registered source `kind` (its module imported now)."""
    if kind not in KINDS:
        raise KeyError(f"unknown source kind {kind!r}; one of: {', '.join(KINDS)}")
    adapter = getattr(import_module(f"{__package__}.{kind}"), "SOURCE", None)
    if not isinstance(adapter, SourceAdapter) or adapter.kind != kind:
        raise TypeError(f"flows/ingest/sources/{kind}.py must declare SOURCE = SourceAdapter(kind={kind!r}, ...)")
    return adapter


def preannotation_origins() -> tuple[str, ...]:
    """The origins whose boxes become pre-annotations (boxes only: answers are never pre-filled, they bias)."""
    return tuple(origin for kind in KINDS for origin in source_adapter(kind).preannotation_origins)


def adapter_arguments(adapter: SourceAdapter, organ: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of one adapter call: its options, and the organ when it takes one."""
    return {**options, "organ": organ} if adapter.takes_organ else dict(options)
