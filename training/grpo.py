"""Stage 2, uncertainty-aware GRPO with the zoom tool (TRL GRPOTrainer, its multi-turn tool loop).

    accelerate launch [--config_file training/recipes/accelerate/zero2.yaml] -m training.grpo \
        --config training/recipes/qwen2.5-vl-7b/grpo/paper.yaml --dataset_path RELEASE_DIR \
        --sft_adapter SFT_OUT --output_dir OUT

Each prompt (system + question with the full image) is rolled out G times. A rollout that writes
`<tool_call>{"bbox_2d": [...]}</tool_call>` gets the crop of its own image back as the next user turn
(`training/environment.py`, masked from the loss) and then answers. Rewards: `training/rewards.py`,
weighted by the recipe's `reward_weights` in the order of its `reward_names`. Starts from the SFT
adapter (merged into the base weights) with a fresh LoRA adapter. Writes the adapter, the processor
and `run.json` into the output folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from training.arguments import ZoomArguments, lora_config, model_dtype, resolve_model, run_stage
from training.data import check_release, grpo_dataset, load_split


def make_parser() -> Any:
    from trl import GRPOConfig, ModelConfig, TrlParser

    return TrlParser((ZoomArguments, GRPOConfig, ModelConfig))


def load_policy(args: ZoomArguments, model_args: Any) -> tuple[Any, Any]:
    """The base model with the SFT adapter merged in (when given), and the processor with the zoom format."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from training.zoom_format import load_processor

    model_path = resolve_model(model_args.model_name_or_path)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path, dtype=model_dtype(model_args))
    if args.sft_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.sft_adapter).merge_and_unload()
    processor = load_processor(model_path, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    return model, processor


def build_trainer(args: ZoomArguments, training_args: Any, model_args: Any) -> Any:
    """Check the release and the rewards, then load the policy and build the trainer (no training yet)."""
    from trl import GRPOTrainer

    from training.environment import environment_factory
    from training.rewards import reward_functions
    from training.zoom_format import allow_nameless_tool_calls

    release = Path(args.dataset_path)
    check_release(release, config=args.dataset_config, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    parser = None
    if args.answer_parser_url:
        from training.answer_parser import openai_answer_parser

        parser = openai_answer_parser(args.answer_parser_url, os.environ.get("LOOKCLOSER_TEACHER_MODEL", "teacher"))
    rewards = reward_functions(
        args.reward_names,
        group_size=training_args.num_generations,
        delta=args.consistency_threshold,
        distributed=training_args.world_size > 1,
        parser=parser,
    )
    allow_nameless_tool_calls()
    model, processor = load_policy(args, model_args)
    rows = load_split(release, config=args.dataset_config, split=args.train_split, max_rows=args.max_train_rows)
    return GRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=grpo_dataset(rows),
        processing_class=processor,
        peft_config=lora_config(args, model_args),
        environment_factory=environment_factory(args.crop_padding),
    )


def main(argv: list[str] | None = None) -> None:
    run_stage("grpo", list(sys.argv[1:] if argv is None else argv), make_parser, build_trainer)


if __name__ == "__main__":
    main()
