"""The source registry: every adapter declared once — its kind, its `iter_items` function (as `module:name`,
imported on use: a run pays only for its own adapter's imports), whether it takes `--organ`, what its path is,
and which of its boxes pre-fill the readers' tasks. The CLI's choices, the ingest stage's `IngestParams.kind`
and the annotate stage's pre-annotations are built from it.

Adding a source: its module here in `sources/`, one entry below, and its licence in `provenance.yaml`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Literal

from flows.ingest.sources.base import SourceItem


@dataclass(frozen=True)
class SourceAdapter:
    kind: str
    iter_items: str  # "module:function"; called as function(path, organ=..., **adapter options)
    takes_organ: bool = True  # False: the adapter knows its organ (and refuses an organ argument)
    path: Literal["local", "dataset id", "none"] = "local"
    preannotation_origins: tuple[str, ...] = ()  # origins of its boxes worth pre-filling a reader's task

    def load(self) -> Callable[..., Iterator[SourceItem]]:
        module, _, function = self.iter_items.partition(":")
        return getattr(import_module(module), function)


SOURCES: tuple[SourceAdapter, ...] = (
    SourceAdapter("folder", "flows.ingest.sources.folder:iter_folder_items", preannotation_origins=("mask",)),
    SourceAdapter("manifest", "flows.ingest.sources.manifest:iter_manifest_items", preannotation_origins=("manifest",)),
    SourceAdapter("buscot", "flows.ingest.sources.buscot:iter_buscot_items", takes_organ=False),
    SourceAdapter("ddti", "flows.ingest.sources.ddti:iter_ddti_items", preannotation_origins=("outline",)),
    SourceAdapter("dicom", "flows.ingest.sources.dicom:iter_dicom_items"),
    SourceAdapter("hf", "flows.ingest.sources.hf:iter_hf_items", path="dataset id"),
    # the phantom generates into the workspace: the ingest stage calls it with its own parameters
    SourceAdapter(
        "phantom", "flows.ingest.sources.phantom:phantom_items", path="none", preannotation_origins=("phantom",)
    ),
)

KINDS: tuple[str, ...] = tuple(adapter.kind for adapter in SOURCES)
# The origins whose boxes become pre-annotations (boxes only: answers are never pre-filled, they bias).
PREANNOTATION_ORIGINS: tuple[str, ...] = tuple(o for adapter in SOURCES for o in adapter.preannotation_origins)


def source_adapter(kind: str) -> SourceAdapter:
    for adapter in SOURCES:
        if adapter.kind == kind:
            return adapter
    raise KeyError(f"unknown source kind {kind!r}; one of: {', '.join(KINDS)}")


def adapter_arguments(adapter: SourceAdapter, organ: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of one adapter call: its options, and the organ when it takes one."""
    return {**options, "organ": organ} if adapter.takes_organ else dict(options)
