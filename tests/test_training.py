"""SFT and GRPO on a published phantom release with the tiny random Qwen2.5-VL, on CPU, in the training environment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from training.data import DatasetContractError, check_release

RECIPES = Path(__file__).resolve().parents[1] / "training" / "recipes" / "tiny-random-qwen2.5-vl"
SMALL_FRAME = ["--min_pixels", "3136", "--max_pixels", "65536"]  # the small release's frame (tests/release_fixtures)


def test_the_trl_adaptation_holds_and_fails_loudly_when_trl_moves(training_env):
    ok = training_env.run("-c", "from training.zoom_format import check_trl_adaptation; check_trl_adaptation()")
    assert ok.returncode == 0, ok.stderr[-2000:]
    moved = training_env.run(
        "-c",
        "import trl.trainer.grpo_trainer as g; del g.GRPOTrainer._tool_call_loop\n"
        "from training.zoom_format import allow_nameless_tool_calls; allow_nameless_tool_calls()",
    )
    assert moved.returncode != 0 and "TrlAdaptationError: GRPOTrainer._tool_call_loop is gone" in moved.stderr


def test_sft_label_mask_is_exactly_the_two_assistant_turns(training_env, small_release, tmp_path):
    code, facts = training_env.run_json(
        "-m", "training.checks", "mask", "--config", str(RECIPES / "sft" / "tiny-cpu.yaml"),
        "--dataset_path", str(small_release), "--output_dir", str(tmp_path), *SMALL_FRAME,
    )  # fmt: skip
    assert code == 0
    turns = facts["assistant_turns"]
    assert len(turns) == 2 and "<tool_call>" in turns[0] and "<answer>" in turns[1]
    assert facts["supervised_spans"] == [turn + "<|im_end|>\n" for turn in turns]
    assert 0 < facts["supervised_tokens"] < facts["tokens"]


def test_sft_runs_three_steps_and_writes_an_adapter_with_its_run_record(training_env, small_release, tmp_path):
    out = tmp_path / "sft"
    result = training_env.run(
        "-m", "training.sft", "--config", str(RECIPES / "sft" / "tiny-cpu.yaml"),
        "--dataset_path", str(small_release), "--dataset_name", "small", "--dataset_version", "v1.0.0",
        "--output_dir", str(out), *SMALL_FRAME,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"adapter_model.safetensors", "adapter_config.json", "chat_template.jinja"} <= {
        p.name for p in out.iterdir()
    }
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert "merger" in adapter["target_modules"] and "visual.blocks" not in adapter["target_modules"]
    record = json.loads((out / "run.json").read_text())
    assert record["stage"] == "sft" and record["steps"] == 3
    assert record["dataset"] == {"name": "small", "version": "v1.0.0", "path": str(small_release)}
    assert record["recipe"].endswith("sft/tiny-cpu.yaml") and record["git_revision"]
    assert [h["loss"] for h in record["log_history"] if "loss" in h][:3]  # three logged steps


def test_sft_teaches_exactly_the_tokens_grpo_samples(training_env, small_release, tmp_path):
    code, facts = training_env.run_json(
        "-m", "training.checks", "stream", "--config", str(RECIPES / "grpo" / "tiny-cpu.yaml"),
        "--dataset_path", str(small_release), "--output_dir", str(tmp_path), *SMALL_FRAME,
    )  # fmt: skip
    assert code == 0
    assert facts["equal"], facts
    assert facts["crop_matches_dataset"]  # the zoom tool's crop is the dataset's crop, pixel for pixel


def test_grpo_rollouts_that_zoom_get_the_crop_as_a_second_image_and_a_masked_turn(
    training_env, small_release, format_model, tmp_path
):
    code, facts = training_env.run_json(
        "-m", "training.checks", "rollout", "--config", str(RECIPES / "grpo" / "tiny-cpu.yaml"),
        "--dataset_path", str(small_release), "--model_name_or_path", str(format_model),
        "--max_train_rows", "1", "--per_device_train_batch_size", "4", "--max_completion_length", "512",
        "--output_dir", str(tmp_path), *SMALL_FRAME,
    )  # fmt: skip
    assert code == 0
    assert facts["steps"] == 2 and len(facts["batches"]) == 2
    assert all(batch["rollouts"] == 4 for batch in facts["batches"])  # G = 4
    assert max(facts["tool_call_frequency"]) > 0 and facts["zoomed_boxes"]
    for batch in facts["batches"]:
        for images, masked, trained in zip(
            batch["images_per_rollout"], batch["tool_masked_tokens"], batch["trained_tokens"], strict=True
        ):
            assert images in (1, 2)
            assert (images == 2) == (masked > 0)  # a zoom adds the crop image and a turn hidden from the loss
            assert trained > 0
    assert {f"rewards/{name}/mean" for name in ("r_loc", "r_acc", "r_fmt", "r_group")} <= set(facts["reward_metrics"])


# ------------------------------------------------------------------------------------------ bad input
def test_an_unknown_recipe_key_stops_before_any_model_is_loaded(training_env, small_release, tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text((RECIPES / "sft" / "tiny-cpu.yaml").read_text() + "learnig_rate: 0.1\n")
    result = training_env.run(
        "-m", "training.sft", "--config", str(recipe), "--dataset_path", str(small_release),
        "--output_dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode != 0 and "learnig_rate" in result.stderr
    assert "Loading weights" not in result.stderr and not (tmp_path / "out").exists()


def test_a_frame_that_differs_from_the_recipe_is_refused_naming_the_row(small_release):
    with pytest.raises(DatasetContractError, match=r"row .* frame, but the recipe's processor .* max_pixels 12845056"):
        check_release(small_release, config="all", min_pixels=3136, max_pixels=12845056)
    facts = check_release(small_release, config="all", min_pixels=3136, max_pixels=65536)
    assert sum(facts.rows.values()) > 0 and facts.shards > 0


def test_a_release_without_the_contract_columns_is_refused(small_release, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_release, broken, ignore=shutil.ignore_patterns(".git"))
    shard = next(broken.glob("data/*/*.parquet"))
    table = pq.read_table(shard)
    pq.write_table(table.drop_columns(["bbox"]), shard)
    with pytest.raises(DatasetContractError, match=r"lacks the columns bbox"):
        check_release(broken, config="all", min_pixels=3136, max_pixels=65536)
    with pytest.raises(DatasetContractError, match="not a release folder"):
        check_release(tmp_path, config="all", min_pixels=3136, max_pixels=65536)
    with pytest.raises(DatasetContractError, match="no rows for config 'kidney'"):
        check_release(small_release, config="kidney", min_pixels=3136, max_pixels=65536)


# ------------------------------------------------------------------------------------------ the job
def test_lookcloser_train_runs_sft_then_grpo_on_a_published_version(workspace, prefect_api, training_env, capsys):
    from flows.catalog import Catalog
    from flows.cli.main import main
    from flows.ingest.image_store import ImageStore
    from flows.runtime.settings import load_settings
    from tests.teacher_fixtures import phantom_consensus

    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=6)
    catalog.close()
    assert main(["synthesize"]) == 0 and main(["publish", "us"]) == 0
    capsys.readouterr()
    assert main(["train", "--dataset", "us", "--version", "v1.0.0", "--recipe", "tiny-cpu"]) == 0
    run = workspace / "training" / "us" / "v1.0.0" / "tiny-cpu"
    for stage, steps in (("sft", 3), ("grpo", 2)):
        assert (run / stage / "adapter_model.safetensors").is_file(), stage
        record = json.loads((run / stage / "run.json").read_text())
        assert (record["stage"], record["steps"]) == (stage, steps)
        assert record["dataset"]["name"] == "us" and record["dataset"]["version"] == "v1.0.0"
        assert record["recipe"].endswith(f"{stage}/tiny-cpu.yaml") and len(record["git_revision"]) >= 40
    grpo = json.loads((run / "grpo" / "run.json").read_text())
    assert grpo["arguments"]["sft_adapter"] == str(run / "sft")  # GRPO starts from the SFT adapter
    assert "rewards/r_group/mean" in grpo["log_history"][0]
    log = (run / "sft" / "job.log").stat().st_mtime
    assert main(["train", "--dataset", "us", "--version", "v1.0.0", "--recipe", "tiny-cpu"]) == 0  # finished: skipped
    assert (run / "sft" / "job.log").stat().st_mtime == log


def test_lookcloser_train_refuses_bad_input_before_loading_a_model(workspace, prefect_api, small_release, capsys):
    import shutil as sh

    from flows.cli.main import main

    assert main(["train", "--dataset", "nothing", "--version", "v1.0.0"]) == 2
    assert "has no version v1.0.0" in capsys.readouterr().err
    release = workspace / "releases" / "small"
    sh.copytree(small_release.parents[1] / "small", release)  # the git repository of the small release
    assert main(["train", "--dataset", "small", "--version", "v1.0.0", "--recipe", "nope"]) == 2
    assert "no sft recipe named 'nope'" in capsys.readouterr().err
    assert main(["train", "--dataset", "small", "--version", "v1.0.0", "--recipe", "tiny-cpu"]) == 2
    err = capsys.readouterr().err
    assert "sft recipe tiny-cpu.yaml: row" in err and "max_pixels 12845056" in err
    assert not (workspace / "training").exists()


def test_the_gpu_deployment_points_at_the_train_flow_with_valid_parameters():
    import importlib

    import yaml as yml

    from flows.stages.train import TrainParams, recipe_files

    spec = yml.safe_load((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())
    train = next(d for d in spec["deployments"] if d["entrypoint"].endswith(":train_flow"))
    path, name = train["entrypoint"].split(":")
    module = path.removesuffix(".py").replace("/", ".")
    assert getattr(importlib.import_module(module), name).name == "train"
    params = TrainParams(**train["parameters"]["params"])
    assert set(recipe_files(params.recipe, params.stages)) == {"sft", "grpo"}  # the paper recipes exist
    assert (Path(__file__).resolve().parents[1] / params.accelerate_config).is_file()
    assert train["work_pool"]["name"] == "gpu"
