"""What every source adapter yields: one `SourceItem` per image, before de-identification."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class SourceItem:
    """One image as a source adapter hands it over (before de-identification)."""

    source: str
    source_ref: str  # opaque, e.g. a file path relative to the source root; never a patient id
    organ: str
    image: Image.Image | None  # None when the adapter could not decode it
    patient_id: str | None = None
    us_region: list[int] | None = None  # [x1, y1, x2, y2] of the ultrasound area; outside is cut away
    annotations: list[dict[str, Any]] = field(default_factory=list)  # box (source frame), attributes, ...
    error: str | None = None  # the adapter's reason when image is None

    @property
    def item_key(self) -> str:
        return f"{self.source}:{self.source_ref}"
