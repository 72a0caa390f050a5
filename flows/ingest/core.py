"""Ingest logic: source items → de-identified, content-addressed images in the catalog.

Each item is decoded defensively, de-identified (`flows.ingest.deid`: cut to its scan area, burned-in
text found by OCR and masked, what cannot be verified quarantined), checked by small functions that
return a snake_case reason, identified by its pixels, grouped with its near-duplicates and given a
patient-level split. An item that fails is quarantined with its reason in the ingest ledger, so
`in = out + quarantined` always holds. Nothing the adapter called the item (file names, folder names,
patient ids, reader names) is stored: refs, patient ids and reader names become salted hashes. Items
already settled by an earlier run are skipped, so a re-run rewrites nothing and a killed run resumes
where it stopped (one catalog transaction per batch).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from tqdm import tqdm

from flows.catalog import Catalog, StageCounter
from flows.catalog.ledger import LedgerMismatchError
from flows.ingest.decode import DecodeError, check_degenerate, decode_image_file, to_declared_mode
from flows.ingest.deid.redact import BurnedInTextPolicy, deidentify_pixels
from flows.ingest.identity import image_id, patient_key, phash
from flows.ingest.image_store import ImageStore
from flows.ingest.sources.base import SourceItem
from flows.ingest.sources.registry import KINDS, source_adapter
from flows.ingest.splits import SplitAssigner
from schemas.frames import MAX_ASPECT_RATIO
from schemas.records import ImageRecord, ReaderAnnotation, SourceAnnotation
from schemas.vocabulary import VocabularyError, cross_domain_organs, registered_organs

log = logging.getLogger(__name__)

INGEST_BATCH = 64  # images per catalog transaction
REF_ID_LENGTH = 32


class IngestOptions(BaseModel):
    """Run choices of the ingest stage that do not depend on the source."""

    test_fraction: float = Field(default=0.2, ge=0.0, le=1.0, description="share of patients in test")
    test_count_per_organ: int | None = Field(
        default=None, ge=0, description="instead of a fraction: this many test images per organ (paper: 120)"
    )
    test_only_organs: tuple[str, ...] = Field(
        default_factory=cross_domain_organs,
        description="organs used only for cross-domain testing (paper §3; default: the vocabularies' test_only)",
    )
    near_duplicate_distance: int = Field(
        default=6, ge=0, le=32, description="pHash Hamming distance at or below which images form one group"
    )
    burned_in_text: BurnedInTextPolicy | None = Field(
        default=None,
        description="burned-in text in the scan area: mask it, quarantine the image (stricter), or crop only, "
        "no OCR (looser); default: mask, and crop only for the phantom (its text is outside its region)",
    )


@dataclass(kw_only=True)
class IngestSummary(StageCounter):
    """Source items: out = new images, skipped = settled by an earlier run; new images per organ and split."""

    stage: str = "ingest"
    source_id: str | None = None  # the source registry's id of a real source (never its path)
    # Items pulled from the adapter, counted as they are enumerated, before any processing: the check
    # below compares it with what the ledger got, so an item lost between the two makes the run fail.
    enumerated: int = 0
    per_organ: dict[str, int] = field(default_factory=dict)
    per_split: dict[str, int] = field(default_factory=dict)

    def check(self) -> IngestSummary:
        super().check()
        if self.enumerated != self.seen:
            raise LedgerMismatchError(
                f"ingest: the source enumerated {self.enumerated} items but the ledger accounts for {self.seen}"
            )
        return self


@dataclass
class Outcomes:
    """What one item became: a new image, an extra ref of a known image, or a quarantine reason."""

    item_key: str
    image: ImageRecord | None = None
    annotations: list[SourceAnnotation] = field(default_factory=list)
    readings: list[ReaderAnnotation] = field(default_factory=list)
    duplicate_of: str | None = None
    reason: str | None = None


# --------------------------------------------------------------------------- identity of items
def ref_id(salt: bytes, source: str, source_ref: str) -> str:
    """Opaque, stable id for an adapter's ref: file and folder names often carry patient names."""
    return hmac.new(salt, f"{source}:{source_ref}".encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[
        :REF_ID_LENGTH
    ]


# --------------------------------------------------------------------------- checks
def check_adapter_error(item: SourceItem) -> str | None:
    return item.error


def check_organ(item: SourceItem) -> str | None:
    return None if item.organ in registered_organs() else "unknown_organ"


def check_us_region(item: SourceItem, image: Image.Image) -> str | None:
    if item.us_region is None:
        return None
    x1, y1, x2, y2 = item.us_region
    inside = 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
    return None if inside else "ultrasound_region_outside_image"


def check_aspect(image: Image.Image) -> str | None:
    return "aspect_ratio_too_extreme" if max(image.size) / min(image.size) > MAX_ASPECT_RATIO else None


ITEM_CHECKS: tuple[Callable[[SourceItem], str | None], ...] = (check_adapter_error, check_organ)


# --------------------------------------------------------------------------- steps
def load_pixels(item: SourceItem) -> Image.Image | str:
    """The item's pixels in a declared mode (decoding its file if the adapter did not), or a reason."""
    try:
        if item.image is not None:
            return to_declared_mode(item.image)
        if item.path is None:
            return "unreadable_image"
        return decode_image_file(item.path)
    except DecodeError as err:
        return err.reason


def _source_boxes(item: SourceItem) -> list[tuple[float, float, float, float]]:
    """The well-formed boxes the source gave (lesions): the scan-area cut must keep them."""
    boxes = []
    for entry in (*item.annotations, *item.readings):
        box = entry.get("box")
        if isinstance(box, list | tuple) and len(box) == 4 and all(isinstance(v, int | float) for v in box):
            boxes.append((float(box[0]), float(box[1]), float(box[2]), float(box[3])))
    return boxes


def reader_pseudonym(salt: bytes, source: str, reader: str) -> str:
    """A source's reader name (often an e-mail or a full name) → a stable, salted pseudonym."""
    digest = hmac.new(salt, f"reader:{source}:{reader}".encode("utf-8", "surrogateescape"), hashlib.sha256)
    return f"{source}-reader-{digest.hexdigest()[:10]}"


def _shift_box(box: Any, offset: tuple[int, int]) -> Any:
    """A source-frame box in the frame of the cut image (validated later by the record)."""
    if not isinstance(box, list | tuple) or len(box) != 4:
        return box
    dx, dy = offset
    return [box[0] - dx, box[1] - dy, box[2] - dx, box[3] - dy]


def _lesion_records(
    item: SourceItem, content_id: str, size: tuple[int, int], offset: tuple[int, int], salt: bytes
) -> tuple[list[SourceAnnotation], list[ReaderAnnotation]]:
    width, height = size
    annotations = [
        SourceAnnotation(
            image_id=content_id,
            organ=item.organ,
            lesion_index=k,
            origin=a.get("origin", item.source),
            box=_shift_box(a.get("box"), offset),
            attributes=a.get("attributes", {}),
            confidence=a.get("confidence", {}),
            image_width=width,
            image_height=height,
        )
        for k, a in enumerate(item.annotations)
    ]
    readings = [
        ReaderAnnotation(
            image_id=content_id,
            organ=item.organ,
            reader=reader_pseudonym(salt, item.source, str(r["reader"])),
            lesion_index=r.get("lesion_index", 0),
            box=_shift_box(r.get("box"), offset),
            attributes=r.get("attributes", {}),
            image_width=width,
            image_height=height,
        )
        for r in item.readings
    ]
    return annotations, readings


def _annotation_reason(err: ValidationError) -> str:
    if any(isinstance(e.get("ctx", {}).get("error"), VocabularyError) for e in err.errors()):
        return "attribute_not_in_vocabulary"
    return "invalid_source_annotation"


@dataclass
class PreparedItem:
    """One item after the per-item work (decode, checks, cut, identity, store), before its split.

    This part needs no knowledge of other items, so it runs anywhere: in the flow's process or on a
    Dask / Ray worker. `image` has a provisional split and group until `Registrar.settle`.
    """

    item_key: str
    reason: str | None = None  # failed before its pixels were identified
    image: ImageRecord | None = None
    annotation_reason: str | None = None  # its source annotations are unusable
    annotations: list[SourceAnnotation] = field(default_factory=list)
    readings: list[ReaderAnnotation] = field(default_factory=list)


def default_policy(source: str) -> BurnedInTextPolicy:
    """`mask` for every source but one this project draws with its text outside the region (the phantom)."""
    known = source in KINDS and source_adapter(source).text_outside_region_by_construction
    return BurnedInTextPolicy.crop_only if known else BurnedInTextPolicy.mask


def prepare_item(
    item: SourceItem, salt: bytes, store: ImageStore, policy: BurnedInTextPolicy | None = None
) -> PreparedItem:
    """Decode, check, de-identify, identify and store one item; pure per item (runs on any worker).

    No exception of one item's own work escapes: it quarantines that item (`decode_failed`, the exception's
    class logged) and the run goes on. The image store's errors are the run's (a full disk, a lost bucket)
    and stop it.
    """
    item_key = f"{item.source}:{ref_id(salt, item.source, item.source_ref)}"
    try:
        prepared, image = _prepare_pixels(item, salt, policy or default_policy(item.source), item_key)
    except Exception as err:
        log.warning("ingest: an item failed with %s; quarantined decode_failed", type(err).__name__)
        return PreparedItem(item_key=item_key, reason="decode_failed")
    if image is not None and prepared.image is not None and not prepared.annotation_reason:
        # an image whose annotations are unusable is never catalogued, so it is not stored either
        prepared.image.storage_key = store.put(prepared.image.image_id, image)
    return prepared


def _prepare_pixels(
    item: SourceItem, salt: bytes, policy: BurnedInTextPolicy, item_key: str
) -> tuple[PreparedItem, Image.Image | None]:
    """The per-item work before storing: decode, checks, de-identification, identity and the record."""
    prepared = PreparedItem(item_key=item_key)
    for check in ITEM_CHECKS:
        if reason := check(item):
            prepared.reason = reason
            return prepared, None
    raw = load_pixels(item)
    if isinstance(raw, str) or (raw_reason := check_us_region(item, raw)):
        prepared.reason = raw if isinstance(raw, str) else raw_reason
        return prepared, None
    if reason := check_degenerate(raw) or check_aspect(raw):  # before the costly part, with the frame's own reason
        prepared.reason = reason
        return prepared, None
    redacted = deidentify_pixels(raw, us_region=item.us_region, keep_boxes=_source_boxes(item), policy=policy)
    del raw  # the frame with burned-in text is not kept a moment longer than needed
    if redacted.image is None:
        prepared.reason = redacted.reason
        return prepared, None
    image, offset = redacted.image, redacted.offset
    if reason := check_degenerate(image) or check_aspect(image):
        prepared.reason = reason
        return prepared, None
    content_id = image_id(image)
    try:
        prepared.annotations, prepared.readings = _lesion_records(item, content_id, image.size, offset, salt)
    except ValidationError as err:
        prepared.annotation_reason = _annotation_reason(err)
    prepared.image = ImageRecord(
        image_id=content_id,
        organ=item.organ,
        source=item.source,
        source_ref=prepared.item_key.split(":", 1)[1],
        patient_key=patient_key(salt, item.patient_id, content_id),
        width=image.width,
        height=image.height,
        phash=phash(image),
        split="train",  # provisional: Registrar.settle assigns it, in source order
        source_metadata=item.metadata,
        deidentification=redacted.note,
        storage_key=ImageStore.key_for(content_id),
    )
    return prepared, image


def prepare_batch(
    items: list[SourceItem], salt: bytes, store: ImageStore, policy: BurnedInTextPolicy | None = None
) -> list[PreparedItem]:
    return [prepare_item(item, salt, store, policy) for item in items]


# Turns batches of items into batches of prepared items, in order (in this process, or on a cluster)
BatchPreparer = Callable[[Iterable[list[SourceItem]]], Iterable[list[PreparedItem]]]


class Registrar:
    """Settles prepared items in source order: duplicates, near-duplicate groups and patient-level splits.

    This is the only part of ingest that depends on the items before it, so it runs in one process.
    """

    def __init__(self, catalog: Catalog, options: IngestOptions) -> None:
        self.splits = SplitAssigner(
            test_fraction=options.test_fraction,
            test_only_organs=options.test_only_organs,
            near_duplicate_distance=options.near_duplicate_distance,
            test_count_per_organ=options.test_count_per_organ,
        )
        self.known_ids: set[str] = set()
        for known in catalog.known_images():
            self.splits.remember(known)
            self.known_ids.add(known.image_id)

    def settle(self, prepared: PreparedItem) -> Outcomes:
        outcome = Outcomes(item_key=prepared.item_key, reason=prepared.reason)
        image = prepared.image
        if image is None:
            return outcome
        if image.image_id in self.known_ids:
            outcome.duplicate_of, outcome.reason = image.image_id, "exact_duplicate"
            return outcome
        if prepared.annotation_reason:
            outcome.reason = prepared.annotation_reason
            return outcome
        split, group = self.splits.assign(image.image_id, image.organ, image.patient_key, image.phash)
        outcome.image = image.model_copy(update={"split": split, "dup_group": group})
        outcome.annotations, outcome.readings = prepared.annotations, prepared.readings
        self.known_ids.add(image.image_id)
        return outcome


def local_preparer(salt: bytes, store: ImageStore, policy: BurnedInTextPolicy | None) -> BatchPreparer:
    """Prepare each batch in this process."""
    return lambda batches: (prepare_batch(batch, salt, store, policy) for batch in batches)


def register_items(
    items: Iterable[SourceItem],
    catalog: Catalog,
    store: ImageStore,
    salt: bytes,
    options: IngestOptions,
    *,
    total: int | None = None,
    preparer: BatchPreparer | None = None,
) -> IngestSummary:
    """De-identify, check, store and catalog every item; one transaction per batch (resumable).

    `preparer` does the per-item work (default: in this process; `flows.stages.ingest` passes one that
    spreads batches over the flow's Dask or Ray task runner). Settling stays here, in source order,
    so a distributed run catalogues exactly what a single-process run does.
    """
    summary = IngestSummary()
    registrar = Registrar(catalog, options)
    settled = catalog.stage_item_keys("ingest")
    bar = tqdm(total=total, desc="ingest", unit="img", disable=None)

    def new_batches() -> Iterator[list[SourceItem]]:
        batch: list[SourceItem] = []
        for item in items:
            summary.enumerated += 1
            if f"{item.source}:{ref_id(salt, item.source, item.source_ref)}" in settled:
                summary.count_skipped()
                bar.update(1)
                continue
            batch.append(item)
            if len(batch) >= INGEST_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    for prepared in (preparer or local_preparer(salt, store, options.burned_in_text))(new_batches()):
        summary.add(_flush(catalog, [registrar.settle(p) for p in prepared]))
        bar.update(len(prepared))
    bar.close()
    log.info(
        "ingest: %d seen, %d new, %d already ingested, quarantined %s",
        summary.seen,
        summary.out,
        summary.skipped,
        summary.quarantined,
    )
    return summary.check()


def _flush(catalog: Catalog, batch: list[Outcomes]) -> IngestSummary:
    summary = IngestSummary()
    sources: list[tuple[str, str, str]] = []
    for outcome in batch:
        source, ref = outcome.item_key.split(":", 1)
        if outcome.image is not None:
            summary.count_out(outcome.item_key, record_key=outcome.image.image_id)
            summary.per_organ[outcome.image.organ] = summary.per_organ.get(outcome.image.organ, 0) + 1
            summary.per_split[outcome.image.split] = summary.per_split.get(outcome.image.split, 0) + 1
            sources.append((source, ref, outcome.image.image_id))
        else:
            assert outcome.reason is not None
            summary.count_quarantined(outcome.reason, outcome.item_key, record_key=outcome.duplicate_of)
            if outcome.duplicate_of:  # one image, several refs
                sources.append((source, ref, outcome.duplicate_of))
    catalog.save_ingested(
        [o.image for o in batch if o.image is not None],
        [a for o in batch for a in o.annotations],
        summary.take_ledger(),
        sources=sources,
        readings=[r for o in batch for r in o.readings],
    )
    return summary
