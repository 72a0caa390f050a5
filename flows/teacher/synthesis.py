"""The synthesis engine: consensus records in, one checked `Rationale` per record out.

Per record: ask the teacher (seed s); if no candidate passes the checks, ask once more with a
repair instruction naming the failures; then once with a new seed (s + 1); then quarantine with the
reasons. Every teacher reply goes into a durable cache keyed by everything that determines it, and
is committed as soon as it arrives, so a killed run loses at most the requests in flight and a
re-run asks the endpoint nothing it has asked before. Near-duplicate rationales within an
(organ, attribute) group are then regenerated with the next seed (another exemplar set), up to a
limit; the pass is deterministic, so a resumed run ends with the same rationales as an
uninterrupted one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flows.catalog import Catalog, Outcome, StageCounter
from flows.teacher.backends import Backend, SamplingParams, TeacherCall
from flows.teacher.catalog_writer import CatalogWriter
from flows.teacher.checks import CheckContext, check_reply
from flows.teacher.client import TeacherRejectedError, TeacherUnavailableError
from flows.teacher.diversity import DiversityPolicy, near_duplicates
from flows.teacher.images import ImagePreparationError
from flows.teacher.prompting import PromptBundle, TeacherRequest
from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from schemas.records import ConsensusRecord, Rationale
from schemas.vocabulary import load_vocabulary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthesisConfig:
    sampling: SamplingParams = field(default_factory=SamplingParams)
    diversity: DiversityPolicy = field(default_factory=DiversityPolicy)
    concurrency: int = 32
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(kw_only=True)
class SynthesisSummary(StageCounter):
    """Consensus records in scope (seen): each ends produced (out) or quarantined; and the teacher's work."""

    stage: str = "synthesize"
    requested: int = 0  # items that needed the teacher this run (the rest were settled before)
    calls: int = 0  # teacher calls made this run (cache misses)
    cached_calls: int = 0
    repaired: int = 0  # produced by the repair request
    reseeded: int = 0  # produced by the regeneration with a new seed
    regenerated_for_diversity: int = 0
    near_duplicates_kept: int = 0
    removed_stale: int = 0
    requests: int = 0  # HTTP requests, retries included (openai backend)
    retries: dict[str, int] = field(default_factory=dict)  # per transient failure kind
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images_per_request: dict[int, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.seen

    @property
    def produced(self) -> int:
        return self.out

    def as_dict(self) -> dict[str, Any]:
        """The keys of `reports/synthesis/summary.json`, as before the stage counter."""
        counts = super().as_dict()
        del counts["stage"], counts["seen"], counts["out"], counts["skipped"]
        return {"records": self.seen, "produced": self.out, **counts}

    def add_work(self, shard: SynthesisSummary) -> None:
        """Count a shard's teacher work into this run's (its outcomes are re-read by the final pass)."""
        counts = (
            "requested",
            "calls",
            "cached_calls",
            "repaired",
            "reseeded",
            "requests",
            "prompt_tokens",
            "completion_tokens",
        )
        for name in counts:
            setattr(self, name, getattr(self, name) + getattr(shard, name))
        self.retries = dict(Counter(self.retries) + Counter(shard.retries))
        self.images_per_request = dict(Counter(self.images_per_request) + Counter(shard.images_per_request))


# ------------------------------------------------------------------------------------------ requests
def choose_question(record: ConsensusRecord) -> str:
    """One of the vocabulary's phrasings, fixed per record (a re-run asks the same question)."""
    questions = load_vocabulary(record.organ).attribute(record.attribute).questions
    digest = hashlib.sha256(f"{record.image_id}:{record.attribute}".encode()).digest()
    return questions[int.from_bytes(digest[:4], "big") % len(questions)]


def build_request(record: ConsensusRecord, *, min_pixels: int, max_pixels: int) -> TeacherRequest:
    """What the teacher is told: the record's label, c and its box in the model frame."""
    frame, box = record.model_frame(min_pixels, max_pixels)
    return TeacherRequest(
        item_key=record.record_id,
        image_id=record.image_id,
        organ=record.organ,
        attribute=record.attribute,
        question=choose_question(record),
        label=record.label,
        confidence=record.confidence,
        bbox_2d=tuple(box),
        box=tuple(record.box),
        model_size=frame,
    )


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def base_key(request: TeacherRequest, backend: Backend, prompt_version: str, sampling: SamplingParams) -> str:
    """Hash of everything a rationale depends on except the seed: the record, the prompt, the model, sampling."""
    return _digest(
        {
            "record": [request.image_id, request.attribute, request.label, request.confidence, list(request.bbox_2d)],
            "question": request.question,
            "prompt": prompt_version,
            "backend": backend.name,
            "model": backend.model,
            "sampling": [sampling.temperature, sampling.n, sampling.max_tokens],
        }
    )


def call_key(base: str, call: TeacherCall) -> str:
    """The cache key of one teacher call: the base key, the seed and, for a repair, what was repaired."""
    return _digest([base, call.seed, call.repair_of, list(call.problems)])


# ------------------------------------------------------------------------------------------ engine
class Synthesizer:
    """Resolves teacher requests into rationales (valid or quarantined), using and filling the cache."""

    def __init__(
        self,
        backend: Backend,
        bundle: PromptBundle,
        config: SynthesisConfig,
        *,
        cached: dict[str, list[str]],
        writer: CatalogWriter,
        summary: SynthesisSummary,
    ) -> None:
        self.backend, self.bundle, self.config = backend, bundle, config
        self.cached, self.writer, self.summary = cached, writer, summary
        self.generator = f"{backend.name}/{backend.model}/{bundle.version}"

    def base_key(self, request: TeacherRequest) -> str:
        return base_key(request, self.backend, self.bundle.version, self.config.sampling)

    async def _replies(self, call: TeacherCall, base: str) -> tuple[str, list[str]]:
        key = call_key(base, call)
        if key in self.cached:
            self.summary.cached_calls += 1
            return key, self.cached[key]
        replies = await self.backend.complete(call)
        self.summary.calls += 1
        if self.backend.cacheable:
            self.cached[key] = replies
            self.writer.cache(
                {
                    "cache_key": key,
                    "item_key": call.request.item_key,
                    "generator": self.generator,
                    "seed": call.seed,
                    "repair": call.repair_of is not None,
                    "replies": replies,
                }
            )
        return key, replies

    def _first_usable(self, request: TeacherRequest, replies: list[str]) -> tuple[Any, list[str], str]:
        """The first candidate that passes every check, else the first candidate's failures."""
        ctx = CheckContext(request=request, bundle=self.bundle)
        first: tuple[Any, list[str], str] | None = None
        for reply in replies or [""]:
            text, problems = check_reply(reply, ctx)
            if not problems:
                return text, [], reply
            first = first or (text, problems, reply)
        assert first is not None
        return first

    async def resolve(self, request: TeacherRequest, *, seed: int = 0, regenerations: int = 0) -> Rationale:
        """Seed s, its repair, then seed s + 1; a rationale that is valid, or invalid with the last reasons."""
        base = self.base_key(request)
        attempts = (TeacherCall(request, seed), None, TeacherCall(request, seed + 1))
        text, problems, reply, key, used_seed = None, [], "", "", seed
        for step, call in enumerate(attempts):
            if call is None:  # the repair of the first attempt names what was wrong
                call = TeacherCall(request, seed, repair_of=reply, problems=tuple(problems))
            key, replies = await self._replies(call, base)
            text, problems, reply = self._first_usable(request, replies)
            used_seed = call.seed
            if not problems:
                self.summary.repaired += step == 1
                self.summary.reseeded += step == 2
                break
        return Rationale(
            image_id=request.image_id,
            attribute=request.attribute,
            organ=request.organ,
            question=request.question,
            label=request.label,
            confidence=request.confidence,
            bbox_2d=list(request.bbox_2d),
            box=list(request.box),
            search=text.search if text else "",
            diagnosis=text.diagnosis if text else "",
            generator=self.generator,
            backend=self.backend.name,
            model=self.backend.model,
            prompt_version=self.bundle.version,
            seed=used_seed,
            regenerations=regenerations,
            base_key=base,
            cache_key=key,
            valid=not problems,
            validation_errors=problems,
        )

    def settle(self, rationale: Rationale) -> None:
        reason = None if rationale.valid else rationale.validation_errors[0]
        outcome = Outcome.out if rationale.valid else Outcome.quarantined
        self.writer.settle(rationale, (rationale.record_id, outcome, reason, rationale.base_key))


async def run_bounded(jobs: Iterable[Any], worker: Callable[[Any], Awaitable[None]], concurrency: int) -> None:
    """Run `worker(job)` for every job with at most `concurrency` at once (a fixed pool, not one task per job)."""
    pending: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        pending.put_nowait(job)

    async def drain() -> None:
        while True:
            try:
                job = pending.get_nowait()
            except asyncio.QueueEmpty:
                return
            await worker(job)

    await asyncio.gather(*(drain() for _ in range(max(1, min(concurrency, pending.qsize())))))


def group_digest(rationales: list[Rationale]) -> str:
    return _digest(sorted([r.record_id, r.cache_key, r.regenerations] for r in rationales))


def diversity_text(rationale: Rationale) -> str:
    return f"{rationale.search} {rationale.diagnosis}"


async def synthesize_records(
    records: list[ConsensusRecord],
    catalog: Catalog,
    backend: Backend,
    bundle: PromptBundle,
    config: SynthesisConfig,
    *,
    organ: str | None = None,
    shard: bool = False,
    on_plan: Callable[[int], None] = lambda _todo: None,
    on_progress: Callable[[str, int], None] = lambda _event, _in_flight: None,
) -> SynthesisSummary:
    """Bring the catalog's rationales (of the organ, or all) in line with `records`; returns what happened.

    `on_plan(n)` is called once with the number of items that need the teacher, `on_progress(event,
    in_flight)` after each of them. A `shard` run (one part of the records, on a cluster worker) only
    makes the first pass: removing stale rationales and the diversity pass need every record, so the
    final, whole run does them.
    """
    summary = SynthesisSummary(seen=len(records))
    requests = [build_request(r, min_pixels=config.min_pixels, max_pixels=config.max_pixels) for r in records]
    existing = {r.record_id: r for r in catalog.rationales(organ)}
    stale = [] if shard else sorted(set(existing) - {r.item_key for r in requests})
    if stale:
        catalog.forget_rationales(stale)
        summary.removed_stale = len(stale)
    writer = CatalogWriter(catalog)
    engine = Synthesizer(backend, bundle, config, cached={}, writer=writer, summary=summary)
    todo = [r for r in requests if (e := existing.get(r.item_key)) is None or e.base_key != engine.base_key(r)]
    summary.requested = len(todo)
    on_plan(len(todo))
    engine.cached.update(catalog.cached_replies(r.item_key for r in todo))
    current = {key: r for key, r in existing.items() if key not in stale}
    in_flight = 0

    async def first_pass(request: TeacherRequest) -> None:
        nonlocal in_flight
        in_flight += 1
        try:
            rationale = await engine.resolve(request)
        except (TeacherUnavailableError, TeacherRejectedError, ImagePreparationError) as err:
            summary.quarantined[err.reason] = summary.quarantined.get(err.reason, 0) + 1
            writer.settle(None, (request.item_key, Outcome.quarantined, err.reason, None))
            current.pop(request.item_key, None)
            on_progress(err.reason, in_flight - 1)
            return
        finally:
            in_flight -= 1
        engine.settle(rationale)
        current[request.item_key] = rationale
        on_progress("produced" if rationale.valid else rationale.validation_errors[0], in_flight)

    backend.plan(todo)
    prefetch = asyncio.ensure_future(backend.prefetch())
    try:
        await run_bounded(todo, first_pass, config.concurrency)
        prefetch.cancel()
        if not shard:
            await _diversify(current, requests, engine, catalog, config, summary)
    finally:
        prefetch.cancel()
        writer.close()
    summary.out = sum(r.valid for r in current.values())
    for reason in (r.validation_errors[0] for r in current.values() if not r.valid):
        summary.quarantined[reason] = summary.quarantined.get(reason, 0) + 1
    # a shard's pass also sees rationales of the other shards' records: only the whole run adds up
    return summary if shard else summary.check()


async def _diversify(
    current: dict[str, Rationale],
    requests: list[TeacherRequest],
    engine: Synthesizer,
    catalog: Catalog,
    config: SynthesisConfig,
    summary: SynthesisSummary,
) -> None:
    """Regenerate near-duplicates within each (organ, attribute) group until none is left or the limit is hit."""
    by_key = {r.item_key: r for r in requests}
    marks = catalog.diversity_marks()
    groups: dict[str, list[str]] = {}
    for key, rationale in current.items():
        if rationale.valid:
            groups.setdefault(f"{rationale.organ}:{rationale.attribute}", []).append(key)
    unreachable: set[str] = set()

    async def regenerate(key: str) -> None:
        previous = current[key]
        try:
            rationale = await engine.resolve(
                by_key[key], seed=previous.seed + 1, regenerations=previous.regenerations + 1
            )
        except (TeacherUnavailableError, TeacherRejectedError, ImagePreparationError) as err:
            log.warning("regeneration of %s failed (%s); the next run tries again", key, err.reason)
            unreachable.add(key)
            return
        summary.regenerated_for_diversity += 1
        if not rationale.valid:  # a failed regeneration keeps the valid rationale it was to replace
            rationale = previous.model_copy(update={"regenerations": previous.regenerations + 1})
        current[key] = rationale
        engine.settle(rationale)

    for group_key, keys in sorted(groups.items()):
        while True:
            members = [current[k] for k in keys if current[k].valid]
            digest = group_digest(members)
            if marks.get(group_key) == digest:
                break
            duplicates = near_duplicates({r.record_id: diversity_text(r) for r in members}, config.diversity)
            redo = [k for k in sorted(duplicates) if current[k].regenerations < config.diversity.max_regenerations]
            if not redo:
                summary.near_duplicates_kept += len(duplicates)
                catalog.save_diversity_mark(group_key, digest)  # a later state has another digest: no race
                break

            unreachable.clear()
            await run_bounded(redo, regenerate, config.concurrency)
            if unreachable:
                break
