"""Stage 1, SFT: teach the Zoom-then-Diagnose format on a published release (TRL SFTTrainer, LoRA).

    accelerate launch [--config_file training/recipes/accelerate/zero2.yaml] -m training.sft \
        --config training/recipes/qwen2.5-vl-7b/sft/paper.yaml --dataset_path RELEASE_DIR --output_dir OUT

The rows are trained on as published: TRL's conversational `messages` with `images: [full, crop]`.
The loss covers exactly the two assistant turns (the search with its tool call, the diagnosis with its
answer), each with its `<|im_end|>`: the zoom chat template marks them for `assistant_only_loss`.
Writes the adapter, the processor (with the zoom template) and `run.json` into the output folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from training.arguments import ZoomArguments, lora_config, model_dtype, resolve_model, run_stage
from training.data import check_release, load_split


def make_parser() -> Any:
    from trl import ModelConfig, SFTConfig, TrlParser

    return TrlParser((ZoomArguments, SFTConfig, ModelConfig))


def build_trainer(args: ZoomArguments, training_args: Any, model_args: Any) -> Any:
    """Check the release, then load the model and processor and build the trainer (no training yet)."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from trl import SFTTrainer

    from training.zoom_format import load_processor

    release = Path(args.dataset_path)
    check_release(release, config=args.dataset_config, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    model_path = resolve_model(model_args.model_name_or_path)
    processor = load_processor(model_path, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path, dtype=model_dtype(model_args))
    train = load_split(release, config=args.dataset_config, split=args.train_split, max_rows=args.max_train_rows)
    return SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        processing_class=processor,
        peft_config=lora_config(args, model_args),
    )


def main(argv: list[str] | None = None) -> None:
    run_stage("sft", list(sys.argv[1:] if argv is None else argv), make_parser, build_trainer)


if __name__ == "__main__":
    main()
