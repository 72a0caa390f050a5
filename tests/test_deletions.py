"""Deletions flow through: a reading withdrawn in Label Studio leaves the catalog's readings and its decisions.

A reader's annotation deleted, emptied (result []) or its task deleted: the next pull moves the reading to
the audit trail (`withdrawn_readings`) and counts the withdrawal out in the pull ledger; the next consensus
run decides the image again; a rationale written for the old record is not published. The drill runs
against a real Label Studio and ends where an undisturbed run that never saw the readings ends.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation.consensus import ConsensusPolicy
from annotation.readings import export_state, readings_from_export
from flows.catalog import Catalog
from flows.catalog.readings import Withdrawal
from flows.catalog.tables import ConsensusDecisionRow, StageItemRow
from flows.ingest.core import IngestOptions, register_items
from flows.ingest.image_store import ImageStore
from flows.ingest.sources.phantom import phantom_items
from flows.release.rows import FrameSettings, iter_rows
from flows.runtime.settings import load_settings
from flows.stages.consensus import ConsensusParams, consensus_flow, decide_organ
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from schemas.records import ReaderAnnotation
from schemas.vocabulary import load_vocabulary
from tests.catalog_content import catalog_content, content_difference

FRAMES = FrameSettings(min_pixels=56 * 56, max_pixels=320 * 320)


# ------------------------------------------------------------------------------ what an export no longer has
def _export() -> list[dict]:
    box = {
        "id": "b1",
        "type": "rectanglelabels",
        "from_name": "lesion",
        "to_name": "image",
        "original_width": 100,
        "original_height": 80,
        "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["Lesion"]},
    }
    return [
        {
            "id": 11,
            "project": 7,
            "data": {"image_id": "a" * 64},
            "annotations": [
                {"id": 101, "result": [box], "completed_by": 1, "updated_at": "t1"},
                {"id": 102, "result": [], "completed_by": 1, "updated_at": "t2"},
                {"id": 103, "result": [box], "completed_by": 1, "was_cancelled": True},
            ],
        },
        {"id": 12, "project": 7, "data": {"image_id": "b" * 64}, "annotations": []},
    ]


def test_export_state_says_why_a_reading_is_withdrawn():
    state = export_state(_export())
    assert state.withdrawal_reason(11, 101) is None  # still there
    assert state.withdrawal_reason(11, 102) == "annotation_emptied"
    assert state.withdrawal_reason(11, 103) == "annotation_cancelled"
    assert state.withdrawal_reason(12, 104) == "annotation_deleted"  # its task is still there
    assert state.withdrawal_reason(13, 105) == "task_deleted"


def test_an_emptied_annotation_is_marked_as_such():
    pulled = {p.annotation_id: p for p in readings_from_export(7, "liver", _export(), lambda _uid: "R1")}
    assert pulled[102].emptied and not pulled[101].emptied
    assert pulled[102].item_key == "7:102:t2"


# ------------------------------------------------------------------------------ catalog, consensus and release
def _truth_readings(catalog: Catalog, image_id: str) -> list[tuple[list[float] | None, dict]]:
    return [(a.box, dict(a.attributes)) for a in catalog.source_annotations(image_id)]


def _readings(image, reader, lesions, *, project, annotation, adjudication=False) -> list[ReaderAnnotation]:
    return [
        ReaderAnnotation(
            image_id=image.image_id,
            organ=image.organ,
            reader=reader,
            adjudication=adjudication,
            lesion_index=k,
            box=box,
            attributes=attributes,
            image_width=image.width,
            image_height=image.height,
            ls_project_id=project,
            ls_task_id=annotation * 10,
            ls_annotation_id=annotation,
        )
        for k, (box, attributes) in enumerate(lesions)
    ]


def _decide(catalog: Catalog) -> None:
    for organ in sorted({i.organ for i in catalog.iter_images()}):
        decide_organ(catalog, organ, ConsensusPolicy())


def test_a_withdrawal_changes_the_decision_and_the_old_rationale_is_not_published(workspace):
    """Disputed image: the adjudicator's answer withdrawn → the primary reader's label, the rationale is stale.
    Agreed image: one reader withdrawn → no record left, its rationale is removed at the next synthesis."""
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    store = ImageStore(settings.resolved_image_store_url)
    register_items(phantom_items(workspace / "src", seed=4, count=2), catalog, store, b"salt", IngestOptions())
    disputed, agreed = list(catalog.iter_images())
    truth = _truth_readings(catalog, disputed.image_id)
    attribute = sorted(truth[0][1])[0]
    other = next(v for v in load_vocabulary(disputed.organ).attribute(attribute).values if v != truth[0][1][attribute])
    changed = [(box, {**attributes, attribute: other}) for box, attributes in truth]
    readings = [
        *_readings(disputed, "R1", truth, project=1, annotation=1),
        *_readings(disputed, "R2", changed, project=2, annotation=2),
        *_readings(disputed, "A1", changed, project=3, annotation=3, adjudication=True),
        *_readings(agreed, "R1", _truth_readings(catalog, agreed.image_id), project=1, annotation=4),
        *_readings(agreed, "R2", _truth_readings(catalog, agreed.image_id), project=2, annotation=5),
    ]
    catalog.save_pulled(readings, [])
    _decide(catalog)
    record_id = f"{disputed.image_id}:{attribute}"
    before = {r.record_id: r for r in catalog.consensus_records()}
    assert before[record_id].label == other and before[record_id].confidence == 0  # the adjudicator's answer
    assert any(r.image_id == agreed.image_id for r in before.values())
    run_synthesis(SynthesizeParams(progress=False), settings)
    assert all(o.sample is not None for o in iter_rows(catalog, store, FRAMES))

    catalog.save_pulled([], [], [Withdrawal(3, 3, "annotation_deleted"), Withdrawal(2, 5, "annotation_emptied")])
    assert {(w["reader"], w["reason"]) for w in catalog.withdrawn_readings()} == {
        ("A1", "annotation_deleted"),
        ("R2", "annotation_emptied"),
    }
    assert {r.reader for r in catalog.reader_annotations(agreed.image_id)} == {"R1"}
    _decide(catalog)
    after = {r.record_id: r for r in catalog.consensus_records()}
    assert after[record_id].label == truth[0][1][attribute]  # now the primary reader's
    assert not any(r.image_id == agreed.image_id for r in after.values())  # a single reading decides nothing
    reasons = {d["reason"] for d in catalog.decisions(agreed.image_id)[-len(truth[0][1]) :]}
    assert reasons <= {"single_reading", "no_readings"} and "single_reading" in reasons

    outcomes = {o.record_id: o for o in iter_rows(catalog, store, FRAMES)}
    assert outcomes[record_id].reason == "rationale_stale"  # written for the adjudicated label
    assert not any(key.startswith(agreed.image_id) for key in outcomes)  # its records are gone, so are its rows
    summary = run_synthesis(SynthesizeParams(progress=False), settings)
    assert summary.removed_stale == len(before) - len(after)  # the agreed image's rationales
    assert all(o.sample is not None for o in iter_rows(catalog, store, FRAMES))  # written again for the new record
    assert {r.record_id for r in catalog.rationales()} == set(after)
    catalog.close()


def test_an_image_whose_every_reading_is_withdrawn_is_decided_again(workspace):
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    store = ImageStore(settings.resolved_image_store_url)
    register_items(phantom_items(workspace / "src", seed=4, count=1), catalog, store, b"salt", IngestOptions())
    (image,) = catalog.iter_images()
    truth = _truth_readings(catalog, image.image_id)
    catalog.save_pulled(
        [
            *_readings(image, "R1", truth, project=1, annotation=1),
            *_readings(image, "R2", truth, project=2, annotation=2),
        ],
        [],
    )
    _decide(catalog)
    assert catalog.consensus_records()
    catalog.save_pulled([], [], [Withdrawal(1, 1, "task_deleted"), Withdrawal(2, 2, "task_deleted")])
    _decide(catalog)
    assert catalog.consensus_records() == []
    attributes = load_vocabulary(image.organ).attributes
    assert {d["reason"] for d in catalog.decisions(image.image_id)[-len(attributes) :]} == {"no_readings"}
    summary = decide_organ(catalog, image.organ, ConsensusPolicy())  # and then it is settled
    assert summary.skipped == len(attributes) and summary.out == summary.quarantined_total == 0
    catalog.close()


# ------------------------------------------------------------------------------ the drill, against Label Studio
IMAGES = 12


def _use_workspace(env: pytest.MonkeyPatch, workspace: Path) -> None:
    env.setenv("LOOKCLOSER_WORKSPACE", str(workspace))
    env.setenv("LOOKCLOSER_PATIENT_KEY_SALT", "deletion drill salt, 16 bytes or more")
    env.setenv("LOOKCLOSER_TASK_RUNNER", "local")
    for name in ("CATALOG_URL", "LABEL_STUDIO_TOKEN", "READERS_FILE", "DASK_ADDRESS", "TEACHER_API_KEY"):
        env.delenv(f"LOOKCLOSER_{name}", raising=False)


@pytest.fixture(scope="module")
def read_in_labelstudio(tmp_path_factory, prefect_api) -> Iterator[dict]:
    """A Label Studio of the drill's own (its projects are the drill's), phantom images read by two readers."""
    from flows.stages.annotate import AnnotateParams, annotate_flow, simulate_readers_flow
    from tests.labelstudio import register_readers, running_labelstudio

    root = tmp_path_factory.mktemp("ls-deletions")
    with running_labelstudio(root) as server, pytest.MonkeyPatch.context() as env:
        _use_workspace(env, root / "ws")
        env.setenv("LOOKCLOSER_LABEL_STUDIO_URL", server.url)
        env.setenv("LOOKCLOSER_IMAGE_STORE_URL", str(server.files_root / "images"))
        settings = load_settings()
        catalog = Catalog(settings.resolved_catalog_url)
        store = ImageStore(settings.resolved_image_store_url)
        register_items(phantom_items(root / "src", seed=9, count=IMAGES), catalog, store, b"s", IngestOptions())
        catalog.close()
        readers = register_readers(
            server, settings, (("sono-a@test.local", "R1"), ("sono-b@test.local", "R2"), ("senior@test.local", "A1"))
        )
        annotate_flow(AnnotateParams())
        assert simulate_readers_flow() == 2 * IMAGES
        yield {
            "server": server,
            "tokens": {r["pseudonym"]: r["token"] for r in readers},
            "catalog_file": Path(settings.resolved_catalog_url.removeprefix("sqlite:///")),
            "env": env,
        }


def _rows(content: dict[str, list[str]], table: str, stage: str | None = None) -> list[str]:
    found = content[table]
    return [r for r in found if r.startswith(f'["{stage}"')] if stage else found


def _latest_decisions(catalog: Catalog) -> dict[tuple[str, str], tuple]:
    """(image, attribute) → the latest decision: label, c, rule, reason, inputs hash."""
    latest = {}
    with Session(catalog.engine) as session:
        for row in session.scalars(select(ConsensusDecisionRow).order_by(ConsensusDecisionRow.id)):
            latest[(row.image_id, row.attribute)] = (row.label, row.confidence, row.rule, row.reason, row.inputs_hash)
    return latest


def _pull_ledger(catalog: Catalog) -> dict[str, tuple[str, str | None, str | None]]:
    with Session(catalog.engine) as session:
        query = select(StageItemRow).where(StageItemRow.stage == "pull")
        return {r.item_key: (r.outcome, r.reason, r.record_key) for r in session.scalars(query)}


def test_drill_readings_withdrawn_in_labelstudio(read_in_labelstudio, tmp_path, monkeypatch):
    from label_studio_sdk import LabelStudio

    from flows.stages.pull import PullParams, pull_flow

    server, tokens, before_pull = (read_in_labelstudio[k] for k in ("server", "tokens", "catalog_file"))
    drill_file, reference_file = tmp_path / "drill.sqlite", tmp_path / "reference.sqlite"
    shutil.copy(before_pull, drill_file)
    shutil.copy(before_pull, reference_file)

    # the drill: pulled and decided with every reading, then three readings are withdrawn in Label Studio
    monkeypatch.setenv("LOOKCLOSER_CATALOG_URL", f"sqlite:///{drill_file}")
    first = pull_flow(PullParams())
    assert sum(s.pulled for s in first) == 2 * IMAGES and sum(s.withdrawn for s in first) == 0
    consensus_flow(ConsensusParams())
    catalog = Catalog(f"sqlite:///{drill_file}")
    decided = {r.image_id for r in catalog.consensus_records()}
    victims = sorted(decided)[:3]
    assert len(victims) == 3, "the drill needs three images with records"
    before = {k: v for k, v in _latest_decisions(catalog).items() if k[0] in victims}
    readings = {image_id: catalog.reader_annotations(image_id) for image_id in victims}
    deleted, emptied, task_gone = (
        next(r for r in readings[image_id] if r.reader == reader)
        for image_id, reader in zip(victims, ("R1", "R2", "R1"), strict=True)
    )
    admin = LabelStudio(base_url=server.url, api_key=server.admin_token)
    admin.annotations.delete(id=deleted.ls_annotation_id)
    LabelStudio(base_url=server.url, api_key=tokens["R2"]).annotations.update(id=emptied.ls_annotation_id, result=[])
    admin.tasks.delete(id=task_gone.ls_task_id)

    pulled = pull_flow(PullParams())
    assert sum(s.withdrawn for s in pulled) == 3 and sum(s.pulled for s in pulled) == 0
    assert all(not s.quarantined for s in pulled)  # a withdrawal is no quarantine
    for victim, gone in zip(victims, (deleted, emptied, task_gone), strict=True):
        assert gone.reader not in {r.reader for r in catalog.reader_annotations(victim)}
    trail = catalog.withdrawn_readings()
    assert {(w["image_id"], w["reader"], w["reason"]) for w in trail} == {
        (deleted.image_id, "R1", "annotation_deleted"),
        (emptied.image_id, "R2", "annotation_emptied"),
        (task_gone.image_id, "R1", "task_deleted"),
    }
    for gone in (deleted, emptied, task_gone):  # every lesion of the reading, as it was
        kept = [w for w in trail if w["ls_annotation_id"] == gone.ls_annotation_id]
        assert len(kept) == len([r for r in readings[gone.image_id] if r.reader == gone.reader])
        assert all(w["withdrawn_at"] is not None for w in kept)
    ledger = _pull_ledger(catalog)
    assert ledger[f"{deleted.ls_project_id}:{deleted.ls_annotation_id}:annotation_deleted"] == (
        "out",
        None,
        deleted.image_id,
    )
    assert ledger[f"{task_gone.ls_project_id}:{task_gone.ls_annotation_id}:task_deleted"] == (
        "out",
        None,
        task_gone.image_id,
    )
    emptied_keys = [k for k in ledger if k.startswith(f"{emptied.ls_project_id}:{emptied.ls_annotation_id}:")]
    assert len(emptied_keys) == 2  # the annotation as pulled, and its emptied version (the withdrawal)
    assert all(ledger[k][:2] == ("out", None) for k in emptied_keys)
    status = catalog.status()["stages"]["pull"]
    assert status["in"] == status["out"] and status["quarantined"] == {}

    # a second pull changes nothing
    content = catalog_content(f"sqlite:///{drill_file}")
    again = pull_flow(PullParams())
    assert sum(s.withdrawn for s in again) == sum(s.pulled for s in again) == 0
    assert content_difference(catalog_content(f"sqlite:///{drill_file}"), content) == {}

    # consensus decides the three images again, and nothing else
    summaries = consensus_flow(ConsensusParams())
    per_image = {v: len(load_vocabulary(readings[v][0].organ).attributes) for v in victims}
    assert sum(s.decided for s in summaries) == sum(per_image.values())
    after = {k: v for k, v in _latest_decisions(catalog).items() if k[0] in victims}
    assert after.keys() == before.keys() and all(after[key] != before[key] for key in before)
    assert {(label, reason) for label, _, _, reason, _ in after.values()} == {(None, "single_reading")}
    assert not set(victims) & {r.image_id for r in catalog.consensus_records()}
    assert sum(s.skipped for s in consensus_flow(ConsensusParams())) == sum(s.seen for s in summaries)
    drill = catalog_content(f"sqlite:///{drill_file}")
    drill_decisions = _latest_decisions(catalog)
    catalog.close()

    # the undisturbed run: pulled once, after the readings were withdrawn (so never made)
    monkeypatch.setenv("LOOKCLOSER_CATALOG_URL", f"sqlite:///{reference_file}")
    reference_pull = pull_flow(PullParams())
    assert sum(s.pulled for s in reference_pull) == 2 * IMAGES - 3
    consensus_flow(ConsensusParams())
    reference = catalog_content(f"sqlite:///{reference_file}")
    reference_catalog = Catalog(f"sqlite:///{reference_file}")
    reference_decisions = _latest_decisions(reference_catalog)
    assert reference_catalog.withdrawn_readings() == []
    reference_catalog.close()
    assert _rows(drill, "reader_annotations") == _rows(reference, "reader_annotations")
    assert _rows(drill, "consensus") == _rows(reference, "consensus")
    assert _rows(drill, "stage_items", "consensus") == _rows(reference, "stage_items", "consensus")
    assert drill_decisions == reference_decisions  # row by row, the latest decision of every image × attribute
