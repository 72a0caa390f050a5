"""Training recipes: `training/recipes/<model>/<sft|grpo>/<recipe>.yaml`, found by name (the train and evaluate
forms name one; a missing or ambiguous name is a one-line error listing the known ones)."""

from __future__ import annotations

from pathlib import Path

from flows.runtime.settings import SettingsError

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "training" / "recipes"
STAGES = ("sft", "grpo")  # the training stages, in order


def recipe_files(recipe: str, stages: list[str]) -> dict[str, Path]:
    """`training/recipes/<model>/<stage>/<recipe>.yaml` for each stage: exactly one per stage."""
    files = {}
    for stage in stages:
        if stage not in STAGES:
            raise SettingsError(f"unknown training stage {stage!r}; stages are {', '.join(STAGES)}")
        found = sorted(RECIPES.glob(f"*/{stage}/{recipe}.yaml"))
        if len(found) != 1:
            known = sorted({p.stem for p in RECIPES.glob(f"*/{stage}/*.yaml")})
            what = "no" if not found else "more than one"
            raise SettingsError(f"{what} {stage} recipe named {recipe!r}; known: {', '.join(known)}")
        files[stage] = found[0]
    return files
