"""A published release as training data: the contract check (before any model is loaded) and the two views.

`check_release` reads only the metadata columns of the parquet shards (no image is decoded) and refuses
a release whose columns do not match the contract or whose model frame differs from the recipe's
processor settings: `smart_resize(orig_size, min_pixels, max_pixels)` must give every row's
`model_size`, otherwise the boxes the model learns would be in another frame than the one it sees.

SFT trains on the rows as published (TRL's conversational `messages` + `images: [full, crop]`). GRPO
gets the prompt part (system + question with the full image) and the columns the rewards need; the
crop is made during the rollout by the zoom tool.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from schemas.dataset import METADATA_COLUMNS, TRAINING_COLUMNS, shard_paths
from schemas.frames import model_size
from schemas.vocabulary import load_vocabulary


class DatasetContractError(ValueError):
    """The release cannot be trained on as configured; the message names the problem."""


@dataclass(frozen=True)
class ReleaseFacts:
    rows: dict[str, int]  # split → rows
    shards: int


def check_release(release: Path, *, config: str, min_pixels: int, max_pixels: int) -> ReleaseFacts:
    """Columns and model frame of every row, from the parquet metadata columns only."""
    if not (release / "README.md").is_file() or not (release / "data").is_dir():
        raise DatasetContractError(f"{release} is not a release folder (no README.md and data/)")
    shards = shard_paths(release, config)
    if not shards:
        raise DatasetContractError(f"release {release.name} has no rows for config {config!r}")
    rows: dict[str, int] = {}
    for shard in shards:
        columns = set(pq.read_schema(shard).names)
        if missing := [c for c in TRAINING_COLUMNS if c not in columns]:
            raise DatasetContractError(f"{shard.name} lacks the columns {', '.join(missing)}")
        table = pq.read_table(shard, columns=list(METADATA_COLUMNS)).to_pylist()
        for row in table:
            width, height = row["orig_size"]
            expected = list(model_size(width, height, min_pixels, max_pixels))
            if expected != list(row["model_size"]):
                raise DatasetContractError(
                    f"row {row['id']} is in a {row['model_size'][0]}×{row['model_size'][1]} frame, but the recipe's "
                    f"processor (min_pixels {min_pixels}, max_pixels {max_pixels}) would show it as "
                    f"{expected[0]}×{expected[1]}: publish with the same settings or change the recipe"
                )
            rows[row["split"]] = rows.get(row["split"], 0) + 1
    return ReleaseFacts(rows=rows, shards=len(shards))


def load_split(release: Path, *, config: str, split: str, max_rows: int | None = None) -> Any:
    from datasets import load_dataset

    dataset = load_dataset(str(release), config, split=split)
    return dataset.select(range(min(max_rows, len(dataset)))) if max_rows else dataset


def answer_key(organ: str, attribute: str) -> str:
    return load_vocabulary(organ).attribute(attribute).answer_key


def to_grpo_row(row: dict[str, Any]) -> dict[str, Any]:
    """The prompt (system + question with the full image), the full image, and what the rewards need."""
    return {
        "prompt": row["messages"][:2],
        "images": row["images"][:1],
        "gt_bbox_2d": row["bbox"],
        "label": row["label"],
        "confidence": row["confidence"],
        "answer_key": answer_key(row["organ"], row["attribute"]),
    }


def grpo_dataset(dataset: Any) -> Any:
    return dataset.map(to_grpo_row, remove_columns=dataset.column_names)


def check_recipe_frames(release: Path, recipes: dict[str, Path]) -> None:
    """The release's model frame must be each recipe's (each distinct frame checked once: the check reads every
    shard's metadata). DatasetContractError names the stage and the recipe."""
    import yaml

    from training.arguments import ZoomArguments

    defaults, checked = ZoomArguments(), set()
    for stage, recipe in recipes.items():
        values = yaml.safe_load(recipe.read_text())
        config = values.get("dataset_config", defaults.dataset_config)
        frame = (values.get("min_pixels", defaults.min_pixels), values.get("max_pixels", defaults.max_pixels))
        if (config, frame) in checked:
            continue
        checked.add((config, frame))
        try:
            check_release(release, config=config, min_pixels=frame[0], max_pixels=frame[1])
        except DatasetContractError as err:
            raise DatasetContractError(f"{stage} recipe {recipe.name}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    """`python -m training.data --release DIR --recipe sft=PATH --recipe grpo=PATH`: the frame check the train stage
    runs before any model is loaded; exit 2 with one line on stderr when the release does not fit a recipe."""
    parser = argparse.ArgumentParser(description="check a release against training recipes")
    parser.add_argument("--release", type=Path, required=True)
    parser.add_argument("--recipe", action="append", default=[], help="STAGE=PATH, repeatable")
    args = parser.parse_args(argv)
    recipes = {stage: Path(path) for stage, _, path in (r.partition("=") for r in args.recipe)}
    try:
        check_recipe_frames(args.release, recipes)
    except DatasetContractError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
