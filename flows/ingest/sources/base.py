"""What every source adapter declares (its `SOURCE`) and yields: one `SourceItem` per image, before
de-identification.

An adapter only knows its layout. It either decodes the image itself (DICOM, phantom, a Hugging
Face column) and sets `image`, or it points at a file with `path` and leaves decoding to the
shared defensive decoder (`flows.ingest.decode`). When it cannot produce an item it sets `error` to a
snake_case reason; the item is then quarantined, never dropped.

`source_ref` is the adapter's own reference (usually the path relative to the source root). It
may contain patient data (file and folder names often do), so it is never stored: ingest replaces
it with a salted hash before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image


@dataclass
class SourceItem:
    """One image as a source adapter hands it over."""

    source: str  # adapter name: folder, manifest, buscot, ddti, dicom, hf, phantom
    source_ref: str  # adapter's own reference; hashed before storage (may hold PHI)
    organ: str
    image: Image.Image | None = None  # decoded by the adapter, or
    path: Path | None = None  # a file for flows.ingest.decode to open
    patient_id: str | None = None  # hashed with a salt before storage
    us_region: list[int] | None = None  # [x1, y1, x2, y2] of the ultrasound area; outside is cut away
    # Source annotations, boxes in the frame of the decoded image (before the us_region cut):
    # {"box": [x1, y1, x2, y2] | None, "attributes": {name: value}, "confidence": {name: 0|1}, "origin": str}
    annotations: list[dict[str, Any]] = field(default_factory=list)
    # Per-reader labels that came with the source:
    # {"reader": pseudonym, "lesion_index": k, "box": [...] | None, "attributes": {name: value}}
    readings: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # allow-listed, non-identifying (pixel spacing, ...)
    error: str | None = None  # the adapter's reason when it could not produce the image

    @property
    def item_key(self) -> str:
        return f"{self.source}:{self.source_ref}"


@dataclass(frozen=True)
class SourceAdapter:
    """An adapter module's declaration, its module-level `SOURCE`; `registry.py` finds it by `kind`."""

    kind: str  # the module's name in `sources/`, and `source` of its items
    iter_items: Callable[..., Iterator[SourceItem]]  # called as iter_items(path, organ=..., **adapter options)
    takes_organ: bool = True  # False: the adapter knows its organ (and refuses an organ argument)
    path: Literal["local", "dataset id", "none"] = "local"  # none: it generates its images (into the workspace)
    preannotation_origins: tuple[str, ...] = ()  # origins of its boxes worth pre-filling a reader's task
    # True only for images this project draws itself (the phantom): every character it burns in lies
    # outside the region it hands over, so the default policy skips OCR for it (a site can still ask for it)
    text_outside_region_by_construction: bool = False
