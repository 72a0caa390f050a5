"""The published rows (DESIGN §6): one `Sample` per consensus record that has a usable rationale.

Rows are streamed in image order, one image in memory at a time: the model-frame image and the zoom
crop are made by the shared functions in `schemas/` (the same ones the teacher saw and GRPO's tool
will run), and the conversation is assembled from the record (box, answer) and the rationale
(prose). A record that cannot become a row is counted with its reason, never dropped silently.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from schemas.crop import crop, model_frame_image
from schemas.records import ConsensusRecord, ImageRecord, Rationale, Sample
from schemas.trajectory import AssemblyError, assemble_trajectory

DATASET_PNG_COMPRESS_LEVEL = 6  # published once, downloaded many times: worth the smaller files


@dataclass(frozen=True)
class FrameSettings:
    """The model frame and crop of a dataset version (recorded in its card; the trainer must match them)."""

    min_pixels: int
    max_pixels: int
    crop_padding: float = 0.0


@dataclass(frozen=True)
class RowOutcome:
    record_id: str
    sample: Sample | None
    reason: str | None  # why there is no sample
    image: ImageRecord | None = None  # the row's image record (its patient key and group feed the gate)


def png_bytes(image: Image.Image, *, compress_level: int = DATASET_PNG_COMPRESS_LEVEL) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def build_sample(
    record: ConsensusRecord, rationale: Rationale, image: ImageRecord, frame: Image.Image, frames: FrameSettings
) -> Sample:
    """One row from a record, its rationale, its image record and the image already in the model frame."""
    messages = assemble_trajectory(record, rationale, min_pixels=frames.min_pixels, max_pixels=frames.max_pixels)
    size, bbox = record.model_frame(frames.min_pixels, frames.max_pixels)
    zoomed, _ = crop(frame, bbox, padding=frames.crop_padding)
    return Sample(
        id=record.record_id,
        organ=record.organ,
        attribute=record.attribute,
        question=rationale.question,
        label=record.label,
        confidence=record.confidence,
        agreement=record.agreement,
        reader_labels=record.reader_labels,
        images=[
            {"bytes": png_bytes(frame), "path": f"{record.image_id}.png"},
            {"bytes": png_bytes(zoomed), "path": f"{record.image_id}-{'-'.join(map(str, bbox))}.png"},
        ],
        messages=messages,
        bbox=bbox,
        bbox_orig=list(record.box),
        orig_size=[record.image_width, record.image_height],
        model_size=list(size),
        split=image.split,
        source=image.source,
        generator=rationale.generator,
    )


def iter_rows(
    catalog: Catalog,
    store: ImageStore,
    frames: FrameSettings,
    *,
    organ: str | None = None,
    exclude_measurement_marks: bool = False,
) -> Iterator[RowOutcome]:
    """Every consensus record (of the organ) as a row or a reason: in = rows + reasons, in image order.

    With `exclude_measurement_marks`, images where ingest saw calipers or a measurement readout (a shortcut a
    model learns: "calipers here" means "lesion here") give no rows (reason `measurement_marks_excluded`)."""
    rationales = {r.record_id: r for r in catalog.rationales(organ)}
    current: tuple[str, ImageRecord | None, Image.Image | None] = ("", None, None)
    for record in catalog.consensus_records(organ):  # ordered by image: each image is decoded once
        rationale = rationales.get(record.record_id)
        if rationale is None:
            yield RowOutcome(record.record_id, None, "no_rationale")
            continue
        if not rationale.valid:
            yield RowOutcome(record.record_id, None, "rationale_quarantined")
            continue
        if current[0] != record.image_id:
            image = catalog.get_image(record.image_id)
            frame = None
            if image is not None and store.exists(image.storage_key):
                frame = model_frame_image(
                    store.open(image.storage_key), min_pixels=frames.min_pixels, max_pixels=frames.max_pixels
                )
            current = (record.image_id, image, frame)
        _, image, frame = current
        if image is None or frame is None:
            yield RowOutcome(record.record_id, None, "image_missing")
            continue
        if exclude_measurement_marks and image.deidentification and image.deidentification.measurement_marks:
            yield RowOutcome(record.record_id, None, "measurement_marks_excluded")
            continue
        try:
            yield RowOutcome(record.record_id, build_sample(record, rationale, image, frame, frames), None, image)
        except AssemblyError:
            yield RowOutcome(record.record_id, None, "rationale_stale")
