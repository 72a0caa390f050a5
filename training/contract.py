"""Pre-flight check: does a published release fit a model's processor and TRL's SFT data collator?

Loads one split of a release folder (a checkout of one version, `lookcloser dataset path`), collates a
batch of rows with `trl`'s `DataCollatorForVisionLanguageModeling` and the model's processor exactly as
`SFTTrainer` does, and checks what training silently depends on: two images per row, every image
placeholder expanded to the number of `<|image_pad|>` tokens its grid needs, and some supervised
tokens. Prints the facts as JSON; exit status 1 when a check fails. Runs in the training environment
(scripts/ensure-train.sh), with PYTHONPATH at the checkout.

Usage: python -m training.contract RELEASE_DIR MODEL_DIR [--config all] [--split train] [--rows 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

IMAGE_PAD = "<|image_pad|>"


def collate_release_batch(release: str, model: str, *, config: str, split: str, rows: int) -> dict[str, Any]:
    from datasets import load_dataset
    from transformers import AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    dataset = load_dataset(release, config, split=split)
    processor = AutoProcessor.from_pretrained(model)
    collator = DataCollatorForVisionLanguageModeling(processor)
    examples = [dataset[i] for i in range(min(rows, len(dataset)))]
    batch = collator(examples)
    pad_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    merge = processor.image_processor.merge_size**2
    grid = batch["image_grid_thw"]
    return {
        "rows": len(examples),
        "images_per_row": sorted({len(e["images"]) for e in examples}),
        "shapes": {key: list(value.shape) for key, value in batch.items()},
        "image_pad_tokens": int((batch["input_ids"] == pad_id).sum()),
        "image_pad_tokens_expected": int(grid.prod(-1).sum()) // merge,
        "pixel_rows": int(batch["pixel_values"].shape[0]),
        "pixel_rows_expected": int(grid.prod(-1).sum()),
        "supervised_tokens": int((batch["labels"] != -100).sum()),
    }


def failures(facts: dict[str, Any]) -> list[str]:
    problems = []
    if facts["images_per_row"] != [2]:
        problems.append(f"rows must carry [full, crop]; found {facts['images_per_row']} images per row")
    if facts["shapes"]["image_grid_thw"][0] != 2 * facts["rows"]:
        problems.append("the collator did not see two images per row")
    if facts["image_pad_tokens"] != facts["image_pad_tokens_expected"]:
        problems.append("image placeholders were not expanded to their grids")
    if facts["pixel_rows"] != facts["pixel_rows_expected"]:
        problems.append("pixel_values do not match the image grids")
    if facts["supervised_tokens"] == 0:
        problems.append("no supervised tokens")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release")
    parser.add_argument("model")
    parser.add_argument("--config", default="all")
    parser.add_argument("--split", default="train")
    parser.add_argument("--rows", type=int, default=4)
    args = parser.parse_args(argv)
    facts = collate_release_batch(args.release, args.model, config=args.config, split=args.split, rows=args.rows)
    facts["failures"] = failures(facts)
    print(json.dumps(facts))
    return 1 if facts["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
