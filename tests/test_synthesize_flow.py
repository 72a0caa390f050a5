"""The synthesize stage with the offline template backend: CLI, report, idempotence, record changes."""

from __future__ import annotations

import json

import pytest

from flows.catalog import Catalog
from flows.cli.main import main
from flows.ingest.image_store import ImageStore
from flows.runtime.settings import load_settings
from flows.stages.synthesize import SynthesizeParams, run_synthesis
from schemas.frames import model_size, to_model_box
from schemas.trajectory import AssemblyError, assemble_trajectory, parse_trajectory
from schemas.vocabulary import load_vocabulary
from tests.teacher_fixtures import phantom_consensus

pytestmark = pytest.mark.integration


@pytest.fixture
def decided(workspace):
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    records = phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=9)
    yield catalog, records
    catalog.close()


def test_cli_synthesize_template_writes_rationales_report_and_ledger(decided, workspace, prefect_api, capsys):
    catalog, records = decided
    assert main(["synthesize"]) == 0
    out = capsys.readouterr().out
    assert f"{records} records = {records} produced + 0 quarantined" in out
    rationales = catalog.rationales()
    assert len(rationales) == records and all(r.valid for r in rationales)
    assert {r.generator for r in rationales} == {"template/none/teacher-v1"}
    assert {r.backend for r in rationales} == {"template"} and {r.model for r in rationales} == {"none"}
    stage = catalog.status()["stages"]["synthesize"]
    assert stage == {"in": records, "out": records, "quarantined": {}}
    report = (workspace / "reports" / "synthesis" / "report.md").read_text()
    assert "| produced |" in report and "definitive (c = 1)" in report and "cautious (c = 0)" in report
    summary = json.loads((workspace / "reports" / "synthesis" / "summary.json").read_text())
    assert summary["produced"] == records


def test_rationale_box_and_label_come_from_the_record_and_render_a_valid_trajectory(decided):
    catalog, _ = decided
    run_synthesis(SynthesizeParams(progress=False), load_settings())
    records = {r.record_id: r for r in catalog.consensus_records()}
    frame = {"min_pixels": load_settings().min_pixels, "max_pixels": load_settings().max_pixels}
    for rationale in catalog.rationales():
        record = records[rationale.record_id]
        size = model_size(record.image_width, record.image_height, **frame)
        expected_box = to_model_box(record.box, (record.image_width, record.image_height), size)
        parsed = parse_trajectory(assemble_trajectory(record, rationale, **frame))
        answer_key = load_vocabulary(record.organ).attribute(record.attribute).answer_key
        assert parsed.bbox_2d == expected_box and parsed.answer == {answer_key: record.label}
        assert parsed.search == rationale.search and parsed.diagnosis == rationale.diagnosis
        assert parsed.question == rationale.question
    # a rationale written for another label is refused, never published with the record's answer
    record = next(iter(records.values()))
    stale = next(r for r in catalog.rationales() if r.record_id == record.record_id)
    other = next(v for v in load_vocabulary(record.organ).attribute(record.attribute).values if v != record.label)
    with pytest.raises(AssemblyError):
        assemble_trajectory(record, stale.model_copy(update={"label": other}), **frame)


def test_rerun_is_idempotent_and_a_changed_record_is_redone(decided):
    catalog, records = decided
    first = run_synthesis(SynthesizeParams(progress=False), load_settings())
    assert first.requested == records
    before = {r.record_id: r for r in catalog.rationales()}
    again = run_synthesis(SynthesizeParams(progress=False), load_settings())
    assert again.requested == 0 and again.calls == 0
    assert {r.record_id: r for r in catalog.rationales()} == before

    # flip c of one record: only that one is redone, in the other tone
    record = catalog.consensus_records()[0]
    flipped = record.model_copy(update={"confidence": 1 - record.confidence})
    catalog.save_consensus([(record.image_id, record.attribute, flipped, "test", None, "changed")])
    changed = run_synthesis(SynthesizeParams(progress=False), load_settings())
    assert changed.requested == 1
    after = {r.record_id: r for r in catalog.rationales()}
    assert after[record.record_id].confidence == flipped.confidence
    assert after[record.record_id].diagnosis != before[record.record_id].diagnosis

    # a record quarantined by consensus loses its rationale and its ledger entry
    catalog.save_consensus([(record.image_id, record.attribute, None, None, "readers_missing", "gone")])
    pruned = run_synthesis(SynthesizeParams(progress=False), load_settings())
    assert pruned.removed_stale == 1 and pruned.records == records - 1
    assert record.record_id not in {r.record_id for r in catalog.rationales()}
    stage = catalog.status()["stages"]["synthesize"]
    assert stage["in"] == records - 1 == stage["out"]


def test_organ_scope_leaves_other_organs_alone(decided):
    catalog, records = decided
    run_synthesis(SynthesizeParams(progress=False), load_settings())
    liver = run_synthesis(SynthesizeParams(organ="liver", progress=False), load_settings())
    assert liver.removed_stale == 0 and liver.records < records
    assert len(catalog.rationales()) == records


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["synthesize", "--backend", "openai"], "LOOKCLOSER_TEACHER_BASE_URLS"),
        (["synthesize", "--prompt-version", "teacher-v99"], "unknown prompt version"),
        (["synthesize", "--backend", "gpt"], "invalid --backend"),
        (["synthesize", "--concurrency", "0"], "invalid --concurrency"),
    ],
)
def test_misconfiguration_is_one_line_and_exit_2(argv, needle, workspace, monkeypatch, capsys):
    monkeypatch.delenv("LOOKCLOSER_TEACHER_BASE_URLS", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_near_duplicates_are_regenerated_until_the_limit(decided):
    catalog, _ = decided
    from flows.teacher.diversity import DiversityPolicy, near_duplicates
    from flows.teacher.synthesis import diversity_text

    summary = run_synthesis(SynthesizeParams(progress=False, max_regenerations=2), load_settings())
    assert summary.regenerated_for_diversity > 0  # templates repeat themselves: the pass had work to do
    groups: dict[str, dict[str, str]] = {}
    rationales = {r.record_id: r for r in catalog.rationales()}
    for r in rationales.values():
        groups.setdefault(f"{r.organ}:{r.attribute}", {})[r.record_id] = diversity_text(r)
    for texts in groups.values():
        for key in near_duplicates(texts, DiversityPolicy()):
            assert rationales[key].regenerations == 2  # a duplicate is only left at the limit


def test_cli_synthesize_openai_through_the_prefect_flow(decided, workspace, prefect_api, monkeypatch, capsys):
    """The served-teacher path as a user runs it: CLI → Prefect flow → worker processes for the images."""
    from tests.scripted_openai import ScriptedOpenAIServer
    from tests.teacher_fixtures import template_responders

    catalog, records = decided
    good, _ = template_responders(catalog)
    with ScriptedOpenAIServer(good, latency_s=0.01) as server:
        monkeypatch.setenv("LOOKCLOSER_TEACHER_BASE_URLS", server.base_url)
        monkeypatch.setenv("LOOKCLOSER_TEACHER_MODEL", "scripted")
        assert main(["synthesize", "--backend", "openai", "--candidates", "1"]) == 0
        assert len(server.log) >= records and {e.images for e in server.log} == {2}
    assert f"{records} records = {records} produced" in capsys.readouterr().out
    assert {r.generator for r in catalog.rationales()} == {"openai/scripted/teacher-v1"}
