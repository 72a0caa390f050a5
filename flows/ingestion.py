"""Ingest logic: source items → de-identified, content-addressed images in the catalog.

Every source adapter yields `SourceItem`s. Each item goes through small checks (each returns a
snake_case reason or None); an item that fails one is quarantined with that reason and counted in
the ingest ledger, so `in = out + quarantined` always holds. Re-running the same items rewrites
the same rows: the ledger is keyed by `source:source_ref` and images by their content id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from tqdm import tqdm

from flows.catalog import Catalog, Outcome
from flows.image_store import ImageStore
from flows.images import assign_split, image_id, patient_key, phash
from flows.sources.base import SourceItem
from schemas.frames import MAX_ASPECT_RATIO, PATCH_FACTOR
from schemas.records import ImageRecord, SourceAnnotation
from schemas.vocabulary import ORGANS, VocabularyError

log = logging.getLogger(__name__)

INGEST_BATCH = 64  # images per catalog transaction


class IngestOptions(BaseModel):
    """Run choices of the ingest stage that do not depend on the source."""

    test_fraction: float = Field(default=0.2, ge=0.0, le=1.0, description="share of patients in test")
    test_only_organs: tuple[str, ...] = Field(
        default=("thyroid",), description="organs used only for cross-domain testing (paper §3)"
    )
    min_side: int = Field(default=PATCH_FACTOR, ge=1, description="smaller images cannot be zoomed")


@dataclass
class IngestSummary:
    seen: int = 0
    out: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestSummary) -> None:
        self.seen += other.seen
        self.out += other.out
        for reason, n in other.quarantined.items():
            self.quarantined[reason] = self.quarantined.get(reason, 0) + n


# --------------------------------------------------------------------------- checks
def check_decoded(item: SourceItem, _options: IngestOptions) -> str | None:
    return item.error or ("unreadable_image" if item.image is None else None)


def check_organ(item: SourceItem, _options: IngestOptions) -> str | None:
    return None if item.organ in ORGANS else "unknown_organ"


def check_size(item: SourceItem, options: IngestOptions) -> str | None:
    assert item.image is not None
    width, height = item.image.size
    if min(width, height) < options.min_side:
        return "image_too_small"
    return "aspect_ratio_too_extreme" if max(width, height) / min(width, height) > MAX_ASPECT_RATIO else None


CHECKS: tuple[Callable[[SourceItem, IngestOptions], str | None], ...] = (check_decoded, check_organ, check_size)


# --------------------------------------------------------------------------- de-identification
def deidentify(item: SourceItem) -> tuple[Image.Image, tuple[int, int]]:
    """Cut the image to its ultrasound region (burned-in text lives outside it); return the offset."""
    assert item.image is not None
    image = item.image
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    if item.us_region is None:
        return image.copy(), (0, 0)
    x1, y1, x2, y2 = item.us_region
    return image.crop((x1, y1, x2, y2)), (x1, y1)


def _shift_box(box: list[float] | None, offset: tuple[int, int], size: tuple[int, int]) -> list[float] | None:
    if box is None:
        return None
    dx, dy = offset
    x1, y1, x2, y2 = box[0] - dx, box[1] - dy, box[2] - dx, box[3] - dy
    return [max(0.0, x1), max(0.0, y1), min(float(size[0]), x2), min(float(size[1]), y2)]


# --------------------------------------------------------------------------- registration
def _register_one(
    item: SourceItem, store: ImageStore, salt: bytes, options: IngestOptions, seen_ids: dict[str, str]
) -> tuple[ImageRecord | None, list[SourceAnnotation], str | None]:
    """The image record and annotations of one item, or the reason it is quarantined."""
    for check in CHECKS:
        if reason := check(item, options):
            return None, [], reason
    image, offset = deidentify(item)
    content_id = image_id(image)
    if seen_ids.get(content_id, item.item_key) != item.item_key:
        return None, [], "duplicate_image"
    key = patient_key(salt, item.patient_id, content_id)
    try:
        annotations = [
            SourceAnnotation(
                image_id=content_id,
                organ=item.organ,
                lesion_index=k,
                origin=a.get("origin", item.source),
                box=_shift_box(a.get("box"), offset, image.size),
                attributes=a.get("attributes", {}),
                confidence=a.get("confidence", {}),
                image_width=image.width,
                image_height=image.height,
            )
            for k, a in enumerate(item.annotations)
        ]
    except ValidationError as err:
        vocabulary = any(isinstance(e.get("ctx", {}).get("error"), VocabularyError) for e in err.errors())
        return None, [], "attribute_not_in_vocabulary" if vocabulary else "invalid_source_annotation"
    record = ImageRecord(
        image_id=content_id,
        organ=item.organ,
        source=item.source,
        source_ref=item.source_ref,
        patient_key=key,
        width=image.width,
        height=image.height,
        phash=phash(image),
        split=assign_split(
            key, item.organ, test_fraction=options.test_fraction, test_only_organs=options.test_only_organs
        ),
        storage_key=store.put(content_id, image),
    )
    seen_ids[content_id] = item.item_key
    return record, annotations, None


def register_items(
    items: Iterable[SourceItem],
    catalog: Catalog,
    store: ImageStore,
    salt: bytes,
    options: IngestOptions,
    *,
    total: int | None = None,
) -> IngestSummary:
    """De-identify, check, store and catalog every item; one transaction per batch (resumable)."""
    summary = IngestSummary()
    seen_ids = catalog.image_source_keys()
    batch: list[tuple[SourceItem, ImageRecord | None, list[SourceAnnotation], str | None]] = []
    for item in tqdm(items, total=total, desc="ingest", unit="img", disable=None):
        batch.append((item, *_register_one(item, store, salt, options, seen_ids)))
        if len(batch) >= INGEST_BATCH:
            summary.add(_flush(catalog, batch))
            batch = []
    summary.add(_flush(catalog, batch))
    log.info("ingest: %d seen, %d out, quarantined %s", summary.seen, summary.out, summary.quarantined)
    return summary


def _flush(
    catalog: Catalog, batch: list[tuple[SourceItem, ImageRecord | None, list[SourceAnnotation], str | None]]
) -> IngestSummary:
    summary = IngestSummary(seen=len(batch))
    ledger = []
    for item, record, _annotations, reason in batch:
        if reason is None:
            assert record is not None
            summary.out += 1
            ledger.append((item.item_key, Outcome.out, None, record.image_id))
        else:
            summary.quarantined[reason] = summary.quarantined.get(reason, 0) + 1
            ledger.append((item.item_key, Outcome.quarantined, reason, None))
    catalog.save_ingested(
        [r for _, r, _, _ in batch if r is not None], [a for _, _, anns, _ in batch for a in anns], ledger
    )
    return summary
