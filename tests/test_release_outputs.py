"""What a release gives its users beyond the shards: the card, the distribution gate, framework exports, the Hub push,
and the contract with TRL's SFT collator."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from PIL import Image

from flows.release.card import NOT_DECLARED, load_provenance
from flows.release.exports import export_release
from flows.release.hub import HubPushError
from flows.release.publish import ReleaseBlockedError, publish_release
from flows.release.repository import version_path, versions
from flows.release.validation import DistributionBounds
from flows.runtime.settings import SettingsError, load_settings
from flows.stages.publish import PublishParams, push_to_hub, run_publish
from tests.release_fixtures import FRAMES


def _front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_the_card_states_the_data_and_every_plot_it_links_exists(published):
    folder, first = published["folder"], published["first"]
    card = (folder / "README.md").read_text()
    meta = _front_matter(card)
    organs = sorted({organ for organ, _ in first.counts})
    assert {c["config_name"] for c in meta["configs"]} == {"all", *organs}
    assert meta["license"] == "cc0-1.0"  # every row is phantom data
    for heading in ("Load exactly one version", "Rows", "Reader agreement", "Expert review", "Validation", "Sources"):
        assert f"## {heading}" in card
    assert f"{first.rows} ultrasound" in card and "passed, 16 expectations" in card
    assert f"`min_pixels` {FRAMES.min_pixels}, `max_pixels` {FRAMES.max_pixels}" in card
    assert "template/none/teacher-v1" in card and "crop-v1" in card and "lookcloser 0.1.0" in card
    links = [line.split("](")[1].rstrip(")") for line in card.splitlines() if line.startswith("![")]
    assert {f"assets/labels-{organ}.png" for organ in organs} <= set(links)
    assert any("confusion-" in link for link in links) and any("box-iou-" in link for link in links)
    for link in links:
        with Image.open(folder / link) as plot:
            assert plot.size[0] > 300
    c0 = sum(n for (_, _, _, c), n in first.labels.items() if c == 0)
    rows = [line for line in card.splitlines() if line.startswith("| ") and line.count("|") == 6]
    assert sum(int(line.split("|")[5]) for line in rows[1:]) == c0  # c = 0 column of the label table


def test_undeclared_and_declared_source_licences(published, workspace):
    assert load_provenance()["folder"]["licence"] is None
    declared = workspace / "provenance.yaml"
    declared.write_text(yaml.safe_dump({"sources": {"phantom": {"licence": "CC-BY-4.0", "citation": "Us (2026)."}}}))
    provenance = load_provenance(declared)
    assert provenance["phantom"] == {"licence": "CC-BY-4.0", "citation": "Us (2026)."}
    catalog, store, folder = published["catalog"], published["store"], published["folder"]
    summary = publish_release(catalog, store, folder, "us-vqa", FRAMES, max_shard_bytes=200_000, provenance=provenance)
    card = (folder / "README.md").read_text()
    assert summary.version == "v1.0.1"  # the card changed, so the release did
    assert _front_matter(card)["license"] == "cc-by-4.0" and "| phantom |" in card and "Us (2026)." in card
    undeclared = {"phantom": {"licence": None, "citation": None}}
    publish_release(catalog, store, folder, "us-vqa", FRAMES, max_shard_bytes=200_000, provenance=undeclared)
    card = (folder / "README.md").read_text()
    assert _front_matter(card)["license"] == "other" and f"| {NOT_DECLARED} |" in card


@pytest.mark.parametrize(
    ("bounds", "column"),
    [
        (DistributionBounds(c0_share_max=0.05, label_share_max=1.0, min_rows=1), "organ_c0_share"),
        (DistributionBounds(c0_share_min=0.9, c0_share_max=1.0, label_share_max=1.0, min_rows=1), "organ_c0_share"),
        (DistributionBounds(c0_share_min=0.0, c0_share_max=1.0, label_share_max=0.2, min_rows=1), "label_share"),
    ],
)
def test_a_label_mix_outside_the_configured_bounds_blocks_the_release(published, bounds, column):
    catalog, store, folder = published["catalog"], published["store"], published["folder"]
    with pytest.raises(ReleaseBlockedError) as blocked:
        publish_release(catalog, store, folder, "us-vqa", FRAMES, max_shard_bytes=200_000, bounds=bounds)
    failed = {f["column"]: f["rows"] for f in blocked.value.report.failures}
    assert list(failed) == [column] and failed[column]
    assert versions(folder) == ["v1.0.0"]
    # groups smaller than min_rows are not judged: the same bounds pass when no group is large enough
    relaxed = DistributionBounds(**{**bounds.__dict__, "min_rows": 10_000})
    assert publish_release(catalog, store, folder, "us-vqa", FRAMES, max_shard_bytes=200_000, bounds=relaxed).rows


@pytest.mark.parametrize("fmt", ["llamafactory", "swift"])
def test_exports_hold_every_row_with_one_image_file_per_placeholder(published, workspace, fmt):
    release = version_path(published["folder"], "v1.0.0", workspace / "versions")
    out = workspace / f"export-{fmt}"
    summary = export_release(release, out, fmt, name="us_vqa")
    assert sum(summary.rows.values()) == published["first"].rows
    counts = published["first"].counts
    assert summary.rows == {s: sum(n for (_, split), n in counts.items() if split == s) for s in summary.rows}
    seen = set()
    for split in summary.rows:
        lines = (out / f"us_vqa_{split}.jsonl").read_text().splitlines()
        assert len(lines) == summary.rows[split]
        for line in lines:
            row = json.loads(line)
            assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant"]
            assert all(isinstance(m["content"], str) for m in row["messages"])
            placeholders = sum(m["content"].count("<image>") for m in row["messages"])
            assert placeholders == len(row["images"]) == 2
            assert row["messages"][1]["content"].startswith("<image>")
            assert "<tool_call>" in row["messages"][2]["content"]
            for image in row["images"]:
                path = out / image if fmt == "llamafactory" else Path(image)
                assert Path(image).is_absolute() == (fmt == "swift")
                with Image.open(path) as opened:
                    opened.verify()
                seen.add(path)
    assert summary.images == len(seen) < 2 * published["first"].rows  # a full image shared by its attributes
    if fmt == "llamafactory":
        info = json.loads((out / "dataset_info.json").read_text())
        assert set(info) == {f"us_vqa_{split}" for split in summary.rows}
        entry = info["us_vqa_train"]
        assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages", "images": "images"}
        assert entry["tags"]["system_tag"] == "system" and (out / entry["file_name"]).is_file()
    again = export_release(release, out, fmt, name="us_vqa")  # re-runs give the same files
    assert again.rows == summary.rows and again.images == summary.images
    assert not list(out.rglob("*.partial"))


def test_the_export_crop_is_the_release_crop(published, workspace):
    from datasets import load_dataset

    release = version_path(published["folder"], "v1.0.0", workspace / "versions")
    out = workspace / "export"
    export_release(release, out, "llamafactory", name="us_vqa", config="breast")
    first = json.loads((out / "us_vqa_train.jsonl").read_text().splitlines()[0])
    rows = load_dataset(str(release), "breast", split="train", cache_dir=str(workspace / "hf-cache"))
    with Image.open(out / first["images"][1]) as exported:
        assert exported.tobytes() == rows[0]["images"][1].tobytes()
    assert first["messages"][2]["content"] == rows[0]["messages"][2]["content"][0]["text"]


# ------------------------------------------------------------------------------------------ the Hub
@dataclass
class FakeHub:
    """Stands in for huggingface_hub.HfApi (the Hub cannot run here); records calls, keeps tags, can fail."""

    tags: list[str] = field(default_factory=list)
    uploads: list[dict] = field(default_factory=list)
    fail_upload: bool = False

    def create_repo(self, repo_id, **kwargs):
        assert kwargs["repo_type"] == "dataset" and kwargs["exist_ok"]

    def list_repo_refs(self, repo_id, **kwargs):
        return SimpleNamespace(tags=[SimpleNamespace(name=t) for t in self.tags])

    def upload_folder(self, **kwargs):
        if self.fail_upload:
            raise RuntimeError("401 Client Error for url https://huggingface.co/api?token=hf_secret_token_123")
        folder = Path(kwargs["folder_path"])
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".git" not in p.parts)
        self.uploads.append({**kwargs, "files": files})
        return SimpleNamespace(oid=f"commit{len(self.uploads)}")

    def create_tag(self, repo_id, **kwargs):
        assert kwargs["revision"] == f"commit{len(self.uploads)}"
        self.tags.append(kwargs["tag"])


def test_versions_are_pushed_to_the_hub_once_each_and_the_token_never_leaks(published, monkeypatch):
    monkeypatch.setenv("LOOKCLOSER_HUB_TOKEN", "hf_secret_token_123")
    monkeypatch.setenv("LOOKCLOSER_HUB_REPO_ID", "lookcloser/us-vqa")
    hub = FakeHub(fail_upload=True)
    with pytest.raises(HubPushError) as failed:
        push_to_hub(load_settings(), "us-vqa", hub)
    assert "lookcloser/us-vqa" in str(failed.value) and "hf_secret" not in str(failed.value)
    assert "token" not in repr(failed.value.__cause__) and failed.value.__suppress_context__
    hub.fail_upload = False
    pushed = push_to_hub(load_settings(), "us-vqa", hub)  # the version the failed run did not push
    assert [p.version for p in pushed] == ["v1.0.0"] and hub.tags == ["v1.0.0"]
    upload = hub.uploads[0]
    assert upload["repo_type"] == "dataset" and "README.md" in upload["files"]
    assert any(f.startswith("data/") and f.endswith(".parquet") for f in upload["files"])
    assert push_to_hub(load_settings(), "us-vqa", hub) == []  # the Hub has it: nothing again
    summary = run_publish(PublishParams(name="us-vqa"), load_settings(), hub=hub)  # the card now names the Hub repo
    assert (summary.version, summary.created) == ("v1.0.1", True)
    assert [p.version for p in summary.hub] == ["v1.0.1"] and hub.tags == ["v1.0.0", "v1.0.1"]
    pushed_card = (Path(hub.uploads[-1]["folder_path"]) / "README.md").read_text()
    assert 'snapshot_download("lookcloser/us-vqa", repo_type="dataset", revision="v1.0.0")' in pushed_card
    again = run_publish(PublishParams(name="us-vqa"), load_settings(), hub=hub)
    assert (again.version, again.created, again.hub) == ("v1.0.1", False, [])  # unchanged: no tag, no push


def test_a_half_configured_hub_is_a_one_line_error_before_any_work(workspace, monkeypatch):
    monkeypatch.setenv("LOOKCLOSER_HUB_TOKEN", "hf_secret_token_123")
    with pytest.raises(SettingsError, match="set both or neither") as error:
        run_publish(PublishParams(name="us-vqa"), load_settings(), hub=FakeHub())
    assert "hf_secret" not in str(error.value)
    assert not (workspace / "releases").exists()


# ------------------------------------------------------------------------------------------ TRL's collator
def test_trl_sft_collator_accepts_a_batch_of_published_rows(published, workspace, training_env):
    release = version_path(published["folder"], "v1.0.0", workspace / "versions")
    code, facts = training_env.run_json("-m", "training.contract", str(release), str(training_env.tiny_model))
    assert code == 0, facts["failures"]
    assert facts["rows"] == 4 and facts["images_per_row"] == [2]
    assert facts["shapes"]["image_grid_thw"] == [8, 3] and facts["shapes"]["input_ids"][0] == 4
    assert facts["image_pad_tokens"] == facts["image_pad_tokens_expected"] > 0
    assert facts["supervised_tokens"] > 0
