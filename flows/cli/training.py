"""Training jobs and evaluation on a dataset version: train, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli import common
from flows.stages.params import EvaluateParams, TrainParams


def train(
    dataset: Annotated[str, typer.Option(help="dataset name")],
    version: Annotated[str, typer.Option(help="dataset version, e.g. v1.0.0")],
    recipe: Annotated[
        str, typer.Option(help="recipe name: training/recipes/<model>/<sft|grpo>/<recipe>.yaml")
    ] = common.default(TrainParams, "recipe"),
    stage: Annotated[list[str] | None, typer.Option(help="sft and/or grpo (default: both, in order)")] = None,
    accelerate_config: Annotated[str | None, typer.Option(help="accelerate config file (multi-GPU)")] = None,
) -> None:
    """Launch the bundled SFT then GRPO job on a dataset version (adapters and run records in the workspace)."""
    common.prepare_prefect()
    from flows.release.repository import ReleaseError
    from flows.stages.train import TrainError, TrainParams, train_flow

    params = common.params(
        TrainParams, dataset=dataset, version=version, recipe=recipe, stages=stage, accelerate_config=accelerate_config
    )
    try:
        outputs = train_flow(params)
    except ReleaseError as err:
        raise common.ConfigError(str(err)) from None
    except TrainError as err:
        common.console.print(f"[bold red]training failed[/]: {err}")
        raise typer.Exit(common.EXIT_ERROR) from None
    for name, folder in outputs.items():
        common.console.print(f"{name:5s} {folder}  (adapter, run.json, job.log)")


def evaluate(
    dataset: Annotated[str, typer.Option(help="dataset name")],
    version: Annotated[str, typer.Option(help="dataset version, e.g. v1.0.0")],
    split: Annotated[str, typer.Option(help="split to evaluate")] = "test",
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (vLLM), base URL")] = None,
    served_model: Annotated[str | None, typer.Option(help="model name at the endpoint")] = None,
    model: Annotated[str | None, typer.Option(help="local checkpoint folder (runs in the training env)")] = None,
    adapter: Annotated[list[str] | None, typer.Option(help="PEFT adapter for --model; repeat: merged in order")] = None,
    rollouts: Annotated[
        int | None,
        typer.Option(help=f"sampled rollouts per sample (default {common.default(EvaluateParams, 'rollouts')})"),
    ] = None,
    no_tool: Annotated[bool, typer.Option("--no-tool", help="single-turn baseline: no zoom")] = False,
    max_rows: Annotated[int | None, typer.Option(help="evaluate the first N rows only")] = None,
    recipe: Annotated[str | None, typer.Option(help="GRPO recipe: its G, T, δ and pixel budget")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help=f"tokens per reply (default {common.default(EvaluateParams, 'max_tokens')})")
    ] = None,
) -> None:
    """Accuracy and uncertainty-alignment metrics per organ (paper Tables 1 and 2), with plots."""
    common.prepare_prefect()
    from flows.release.repository import ReleaseError
    from flows.stages.evaluate import EvaluateParams, evaluate_flow

    params = common.params(
        EvaluateParams,
        dataset=dataset,
        version=version,
        split=split,
        endpoint=endpoint,
        served_model=served_model,
        model=model,
        adapters=adapter,
        rollouts=rollouts,
        tool=not no_tool,
        max_rows=max_rows,
        recipe=recipe,
        max_tokens=max_tokens,
    )
    try:
        folder = evaluate_flow(params)
    except ReleaseError as err:
        raise common.ConfigError(str(err)) from None
    common.console.print((Path(folder) / "report.md").read_text())
    common.console.print(f"report, metrics.csv and plots: {folder}")
