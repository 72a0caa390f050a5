"""The one stage list (flows/stages/registry.py): the pipeline, the catalog's ledger, the deployments in
prefect.yaml and the CLI are derived from it or checked against it here."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml
from pydantic import BaseModel

from flows.catalog import STAGES as LEDGER_IN_CATALOG
from flows.stages import pipeline
from flows.stages.registry import LEDGER_STAGES, STAGES, WHOLE_PATH, stage

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_names_a_flow_and_a_params_model_that_exist():
    for spec in STAGES:
        flow = spec.load_flow()
        assert flow.name.startswith(spec.name), f"{spec.flow} is the Prefect flow named {flow.name!r}"
        params = spec.load_params()
        assert issubclass(params, BaseModel)
        first = next(iter(inspect.signature(flow.fn).parameters.values()))
        assert params.__name__ in str(first.annotation), f"{spec.flow} does not take {params.__name__}"
        assert spec.reads and spec.writes


def test_the_pipeline_runs_the_whole_path_of_the_list_in_its_order():
    assert list(pipeline.STEPS) == list(WHOLE_PATH)
    assert set(pipeline.PipelineParams.model_fields["skip"].annotation.__args__[0].__args__) == set(WHOLE_PATH)


def test_the_catalog_ledger_counts_the_stages_the_list_marks():
    assert tuple(LEDGER_IN_CATALOG) == LEDGER_STAGES


def test_every_deployment_runs_a_flow_of_the_list_or_the_pipeline():
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    known = {spec.flow for spec in STAGES} | {
        "flows.stages.pipeline:pipeline_flow",
        "flows.stages.pipeline:labels_flow",
    }
    for deployment in deployments:
        path, _, function = deployment["entrypoint"].partition(":")
        module = path.removesuffix(".py").replace("/", ".")
        assert f"{module}:{function}" in known, deployment["name"]
        assert (REPO / path).is_file()


def test_an_unknown_stage_is_named_with_the_list():
    try:
        stage("deploy")
    except KeyError as err:
        assert "ingest" in str(err) and "evaluate" in str(err)
    else:
        raise AssertionError("an unknown stage was accepted")
