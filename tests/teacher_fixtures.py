"""Consensus records on phantom images, written straight into a catalog (for the synthesis tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from flows.catalog import Catalog
from flows.image_store import ImageStore
from flows.ingestion import IngestOptions, register_items
from flows.sources.phantom import phantom_items
from schemas.records import ConfidenceSource, ConsensusRecord


def phantom_consensus(catalog: Catalog, store: ImageStore, sources: Path, *, count: int, seed: int = 3) -> int:
    """Ingest `count` phantom images and decide one record per lesion attribute; c = 0 for about a third."""
    register_items(phantom_items(sources, seed=seed, count=count), catalog, store, b"salt", IngestOptions())
    decisions = []
    for image in catalog.iter_images():
        truth = catalog.source_annotations(image.image_id)[0]
        for attribute, label in sorted(truth.attributes.items()):
            digest = hashlib.sha256(f"{image.image_id}:{attribute}".encode()).digest()
            confidence = 0 if digest[0] < 85 else 1
            record = ConsensusRecord(
                image_id=image.image_id,
                organ=image.organ,
                attribute=attribute,
                label=label,
                confidence=confidence,
                agreement=1.0 if confidence else 0.5,
                reader_labels={"R1": label, "R2": label},
                box=truth.box,
                box_iou=0.9,
                confidence_source=ConfidenceSource.dual_reader,
                image_width=image.width,
                image_height=image.height,
            )
            decisions.append((image.image_id, attribute, record, "test", None, "inputs"))
    catalog.save_consensus(decisions)
    return len(decisions)
