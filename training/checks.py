"""Diagnostics of the training setup on a real release, printed as one JSON object (tests and people use them).

    python -m training.checks mask   --config SFT_RECIPE  --dataset_path RELEASE [overrides]
    python -m training.checks stream --config GRPO_RECIPE --dataset_path RELEASE [overrides]
    python -m training.checks rollout --config GRPO_RECIPE --dataset_path RELEASE [overrides]

- mask: the SFT label mask of the first row: which text is supervised (must be exactly the two assistant
  turns, each with its `<|im_end|>`), and which is not.
- stream: the SFT token ids of the first row against the ids a GRPO rollout writing the same text has:
  prompt + turn 1 + TRL's tool suffix (the crop turn) + turn 2. Equal means SFT teaches exactly what GRPO
  samples.
- rollout: trains the recipe's steps and records, per rollout of each generation batch, whether it called
  the tool, how many images its loss forward saw and how many of its tokens the tool mask hid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _text_parts(message: dict[str, Any]) -> str:
    return "".join(part.get("text") or "" for part in message["content"] if part.get("type") == "text")


def check_mask(argv: list[str]) -> dict[str, Any]:
    from training import sft

    args, training_args, model_args = sft.make_parser().parse_args_and_config(argv)
    trainer = sft.build_trainer(args, training_args, model_args)
    row = trainer.train_dataset[0]
    batch = trainer.data_collator([row])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    tokenizer = trainer.processing_class.tokenizer
    supervised = labels != -100
    spans, current = [], []
    for token, keep in zip(ids.tolist(), supervised.tolist(), strict=True):
        if keep:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current)), current.clear()
    if current:
        spans.append(tokenizer.decode(current))
    messages = row["messages"]
    return {
        "supervised_spans": spans,
        "assistant_turns": [_text_parts(m) for m in messages if m["role"] == "assistant"],
        "supervised_tokens": int(supervised.sum()),
        "tokens": len(ids),
    }


def _sft_ids(processor: Any, row: dict[str, Any]) -> list[int]:
    from trl.data_utils import prepare_multimodal_messages

    messages = prepare_multimodal_messages(row["messages"], images=row["images"])
    return processor.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"][0]


def check_stream(argv: list[str]) -> dict[str, Any]:
    from trl.data_utils import prepare_multimodal_messages

    from training import grpo
    from training.data import load_split
    from training.environment import environment_factory

    args, training_args, model_args = grpo.make_parser().parse_args_and_config(argv)
    trainer = grpo.build_trainer(args, training_args, model_args)
    processor, tokenizer = trainer.processing_class, trainer.processing_class.tokenizer
    row = load_split(Path(args.dataset_path), config=args.dataset_config, split="train")[0]
    sft_ids = list(_sft_ids(processor, row))
    prompt = prepare_multimodal_messages(row["messages"][:2], images=row["images"][:1])
    prompt_ids = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    turn1, turn2 = (_text_parts(m) for m in row["messages"] if m["role"] == "assistant")
    env = environment_factory(args.crop_padding)()
    env.reset(**row)
    bbox = json.loads(turn1.split("<tool_call>")[1].split("</tool_call>")[0])["bbox_2d"]
    tool_message = {"role": "tool", "name": "zoom_in", "content": env.zoom_in(bbox)}
    suffix = trainer._get_tool_suffix_ids([tool_message])
    grpo_ids = (
        list(prompt_ids["input_ids"][0])
        + tokenizer(turn1 + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        + list(suffix)
        + tokenizer(turn2 + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    )
    trailing = tokenizer("\n", add_special_tokens=False)["input_ids"]  # the template ends the last turn with it
    return {
        "equal": sft_ids == grpo_ids + trailing,
        "sft_tokens": len(sft_ids),
        "grpo_tokens": len(grpo_ids),
        "first_difference": next(
            (i for i, (a, b) in enumerate(zip(sft_ids, grpo_ids + trailing, strict=False)) if a != b), None
        ),
        "crop_matches_dataset": env.zoom_in(bbox)[0]["image"].tobytes() == row["images"][1].tobytes(),
    }


def check_rollout(argv: list[str]) -> dict[str, Any]:
    import torch

    from training import grpo

    args, training_args, model_args = grpo.make_parser().parse_args_and_config(argv)
    trainer = grpo.build_trainer(args, training_args, model_args)
    batches: list[dict[str, Any]] = []
    original = trainer._generate_and_score_completions

    def recording(inputs: Any) -> Any:
        out = original(inputs)
        tool_mask = out.get("tool_mask")
        completion = out["completion_mask"]
        masked = ((1 - tool_mask) * completion).sum(1).tolist() if tool_mask is not None else [0] * len(completion)
        images = out.get("num_images")
        batches.append(
            {
                "rollouts": int(completion.shape[0]),
                "images_per_rollout": [int(n) for n in images] if images is not None else [],
                "tool_masked_tokens": [int(n) for n in masked],
                "trained_tokens": [int(n) for n in (completion * (tool_mask if tool_mask is not None else 1)).sum(1)],
                "advantages": [round(float(a), 4) for a in out["advantages"]],
                "pixel_rows": int(out["pixel_values"].shape[0]) if torch.is_tensor(out.get("pixel_values")) else 0,
            }
        )
        return out

    trainer._generate_and_score_completions = recording
    trainer.train()
    logs = [h for h in trainer.state.log_history if "tools/call_frequency" in h]
    return {
        "steps": trainer.state.global_step,
        "batches": batches,
        "tool_call_frequency": [h["tools/call_frequency"] for h in logs],
        "reward_metrics": sorted({k for h in logs for k in h if k.startswith("rewards/")}),
        "zoomed_boxes": [env.bbox_2d for env in getattr(trainer, "environments", []) if env.bbox_2d is not None],
    }


CHECKS = {"mask": check_mask, "stream": check_stream, "rollout": check_rollout}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in CHECKS:
        print(f"usage: python -m training.checks {{{'|'.join(CHECKS)}}} --config RECIPE ...", file=sys.stderr)
        return 2
    print(json.dumps(CHECKS[argv[0]](argv[1:]), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
