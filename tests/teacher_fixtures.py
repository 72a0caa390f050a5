"""Consensus records on phantom images, written straight into a catalog (for the synthesis tests)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from flows.catalog import Catalog
from flows.ingest.core import IngestOptions, register_items
from flows.ingest.image_store import ImageStore
from flows.ingest.sources.phantom import PhantomConfig, phantom_items
from flows.teacher.backends import TemplateBackend
from flows.teacher.prompting import TeacherRequest, load_prompt_bundle
from flows.teacher.synthesis import build_request
from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from schemas.records import ConfidenceSource, ConsensusRecord


def phantom_consensus(
    catalog: Catalog,
    store: ImageStore,
    sources: Path,
    *,
    count: int,
    seed: int = 3,
    config: PhantomConfig | None = None,
) -> int:
    """Ingest `count` phantom images and decide one record per lesion attribute; c = 0 for about a third."""
    items = phantom_items(sources, seed=seed, count=count, config=config or PhantomConfig())
    register_items(items, catalog, store, b"salt", IngestOptions())
    return truth_consensus(catalog)


def truth_consensus(catalog: Catalog) -> int:
    """One consensus record per lesion attribute of every catalogued image, from its source truth."""
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


def template_responders(catalog: Catalog) -> tuple[Callable[[str, dict], str], Callable[[str, dict], str]]:
    """Scripted-server responders that answer like a good teacher (and like one with the wrong tone).

    The item header `image_id:attribute:seed:first|repair` says which record and seed a request is for;
    the reply is the template backend's, so it passes every check (the wrong-tone one fails exactly one).
    """
    bundle = load_prompt_bundle()
    backend = TemplateBackend(bundle)
    settings_frame = {"min_pixels": DEFAULT_MIN_PIXELS, "max_pixels": DEFAULT_MAX_PIXELS}
    requests = {r.record_id: build_request(r, **settings_frame) for r in catalog.consensus_records()}

    def parse(item: str) -> tuple[TeacherRequest, int]:
        image_id, attribute, seed, _kind = item.split(":")
        return requests[f"{image_id}:{attribute}"], int(seed)

    def good(item: str, _body: dict) -> str:
        request, seed = parse(item)
        return json.dumps(backend.reply(request, seed))

    def wrong_tone(item: str, _body: dict) -> str:
        request, seed = parse(item)
        flipped = request.model_copy(update={"confidence": 1 - request.confidence})
        return json.dumps(backend.reply(flipped, seed))

    return good, wrong_tone
