"""The card's reader agreement is what the consensus stage measured and saved (with its policy), not a second
measurement with default values; without a saved report that describes the catalog, the card says it measured."""

from __future__ import annotations

from annotation.consensus import ConsensusPolicy
from flows.release.publish import publish_release
from flows.reports.agreement import agreement_folder, load_agreement_report, write_agreement_report
from schemas.vocabulary import registered_organs
from tests.release_fixtures import FRAMES

MEASURED_NOW = "No saved consensus report describes this catalog's decisions"


def _publish(published, report):
    catalog, store, folder = published["catalog"], published["store"], published["folder"]
    publish_release(catalog, store, folder, "us-vqa", FRAMES, max_shard_bytes=200_000, agreement_report=report)
    return (folder / "README.md").read_text()


def test_without_a_saved_report_the_card_says_it_measured_with_the_default_threshold(published):
    card = (published["folder"] / "README.md").read_text()
    assert MEASURED_NOW in card and f"threshold {ConsensusPolicy().min_box_iou:.2f}" in card


def test_the_card_shows_the_saved_report_and_its_policy(published, workspace):
    report = agreement_folder(workspace)
    write_agreement_report(published["catalog"], list(registered_organs()), report, ConsensusPolicy(min_box_iou=0.3))
    saved = load_agreement_report(report, published["catalog"])
    assert saved is not None and saved.policy.min_box_iou == 0.3 and saved.statistics

    card = _publish(published, report)
    assert "IoU 0.30 need review" in card and MEASURED_NOW not in card
    histograms = sorted(report.glob("box-iou-*.png"))
    assert histograms
    for plot in histograms:  # the saved plot itself (its threshold line at 0.30), not one drawn again at 0.50
        assert f"assets/{plot.name}" in card
        assert (published["folder"] / "assets" / plot.name).read_bytes() == plot.read_bytes()


def test_a_report_older_than_the_catalog_decisions_is_not_used(published, workspace):
    catalog = published["catalog"]
    report = agreement_folder(workspace)
    write_agreement_report(catalog, list(registered_organs()), report, ConsensusPolicy(min_box_iou=0.3))
    record = catalog.consensus_records()[0]
    flipped = record.model_copy(update={"confidence": 1 - record.confidence})
    catalog.save_consensus([(record.image_id, record.attribute, flipped, "test", None, "changed inputs")])

    assert load_agreement_report(report, catalog) is None
    card = _publish(published, report)
    assert MEASURED_NOW in card and "IoU 0.30" not in card
