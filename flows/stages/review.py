"""Expert review of teacher rationales: sample, push to Label Studio, pull verdicts, report acceptance.

Push imports each sampled rationale once (looked up by `rationale_key`); pull maps every verdict back
by rationale and cache key, so a rationale regenerated since it was sampled is never judged by the
review of its predecessor. Acceptance rates per organ and tone go to a Prefect artifact and to
`reports/review/acceptance.json`, which the dataset card reads.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from annotation.access import admin_client, load_assignment, reader_client
from annotation.client import LabelStudioClient
from annotation.rationale_review import (
    REJECT_REASONS,
    REVIEW_PROJECT_TITLE,
    review_label_config,
    review_result,
    review_task,
    sample_for_review,
    verdict_from_result,
)
from flows.catalog import Catalog, StageCounter, open_catalog
from flows.catalog.locks import stage_lock
from flows.reports.review import acceptance, acceptance_markdown
from flows.runtime.settings import Settings, load_settings
from flows.stages.params import ReviewParams
from schemas.frames import model_size

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ReviewSummary(StageCounter):
    """Sampled rationales: out = pushed as new tasks, skipped = already in the project (or image gone)."""

    stage: str = "review"
    verdicts: int = 0
    rejected_now: int = 0

    @property
    def sampled(self) -> int:
        return self.seen

    @property
    def pushed(self) -> int:
        return self.out


def push_reviews(client: LabelStudioClient, catalog: Catalog, settings: Settings, share: float) -> tuple[int, int]:
    """Sample and import the rationales not yet in the review project; returns (sampled, pushed)."""
    project_id = client.ensure_project(REVIEW_PROJECT_TITLE, review_label_config())
    client.ensure_local_storage(project_id, settings.resolved_image_store_url)
    sampled = sample_for_review(catalog.rationales(), share)
    present = {t["data"].get("rationale_key"): t for t in client.export_tasks(project_id)}
    images = {r.image_id: catalog.get_image(r.image_id) for r in sampled}
    missing = [
        r for r in sampled if r.record_id not in present or present[r.record_id]["data"].get("cache_key") != r.cache_key
    ]
    tasks = []
    for r in missing:
        image = images[r.image_id]
        if image is not None:
            frame = model_size(image.width, image.height, settings.min_pixels, settings.max_pixels)
            tasks.append(review_task(r, f"{settings.label_studio_image_prefix}/{image.storage_key}", frame))
    pushed = client.import_tasks(project_id, tasks) if tasks else 0
    catalog.save_review_tasks(
        {
            "image_id": r.image_id,
            "attribute": r.attribute,
            "cache_key": r.cache_key,
            "organ": r.organ,
            "confidence": r.confidence,
            "ls_project_id": project_id,
            "ls_task_id": None,
        }
        for r in missing
    )
    return len(sampled), pushed


def pull_reviews(client: LabelStudioClient, catalog: Catalog, settings: Settings) -> tuple[int, int]:
    """Bring back every verdict given so far; returns (verdicts, rationales rejected by this pull)."""
    project_id = client.ensure_project(REVIEW_PROJECT_TITLE, review_label_config())
    assignment = load_assignment(settings)
    emails = client.users()
    verdicts = []
    for ls_task in client.export_tasks(project_id):
        data = ls_task["data"]
        annotations = [a for a in ls_task.get("annotations", []) if not a.get("was_cancelled")]
        if not annotations or "rationale_key" not in data:
            continue
        latest = max(annotations, key=lambda a: a.get("updated_at") or a.get("created_at") or "")
        verdict = verdict_from_result(latest.get("result", []))
        if verdict is None:
            continue
        completed_by = latest.get("completed_by")
        user_id = completed_by.get("id") if isinstance(completed_by, dict) else completed_by
        reviewer = assignment.pseudonym(emails.get(int(user_id), "")) if user_id is not None else None
        verdicts.append((data["rationale_key"], data["cache_key"], verdict[0], verdict[1], reviewer or "unknown"))
    return len(verdicts), catalog.save_review_verdicts(verdicts)


def simulate_reviewer(settings: Settings, catalog: Catalog, *, accept_rate: float = 0.9, seed: int = 0) -> int:
    """Demo only: each organ's adjudicator (else reader A) reviews the pending tasks; returns posts."""
    assignment = load_assignment(settings)
    rng = random.Random(seed)
    posted = 0
    clients: dict[str, LabelStudioClient] = {}
    project_id = None
    for organ, readers in sorted(assignment.organs.items()):
        email = assignment.adjudicators.get(organ, readers[0])
        clients[organ] = reader_client(settings, email)
    for organ, client in clients.items():
        project_id = project_id or client.ensure_project(REVIEW_PROJECT_TITLE, review_label_config())
        for ls_task in client.export_tasks(project_id):
            if ls_task["data"].get("organ") != organ or ls_task.get("annotations"):
                continue
            verdict = "accept" if rng.random() < accept_rate else "reject"
            reason = rng.choice(REJECT_REASONS) if verdict == "reject" else None
            client.create_annotation(int(ls_task["id"]), review_result(verdict, reason), lead_time=5.0)
            posted += 1
    return posted


@task
def review_round_task(params: ReviewParams, simulate: bool) -> ReviewSummary:
    settings = load_settings()
    with open_catalog(settings) as catalog:
        client = admin_client(settings)
        sampled, pushed = push_reviews(client, catalog, settings, params.share)
        summary = ReviewSummary(seen=sampled, out=pushed, skipped=sampled - pushed)
        if simulate:
            simulate_reviewer(settings, catalog)
        summary.verdicts, summary.rejected_now = pull_reviews(client, catalog, settings)
        return summary.check()


@task
def acceptance_report_task() -> dict[str, dict[str, Any]]:
    settings = load_settings()
    with open_catalog(settings) as catalog:
        table = acceptance(catalog)
    folder = settings.workspace / "reports" / "review"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "acceptance.json").write_text(json.dumps(table, indent=2))
    markdown = acceptance_markdown(table)
    (folder / "acceptance.md").write_text(markdown)
    create_markdown_artifact(key="rationale-review", markdown=markdown, description="expert acceptance of rationales")
    return table


@flow(name="review-rationales")
def review_flow(params: ReviewParams | None = None, simulate: bool = False) -> ReviewSummary:
    """Send a stratified sample of rationales to expert review and bring the verdicts back."""
    params = params or ReviewParams()
    with stage_lock(load_settings().resolved_catalog_url, "review"):
        summary = review_round_task(params, simulate)
        acceptance_report_task()
    return summary
