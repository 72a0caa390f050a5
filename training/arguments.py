"""The recipe's own keys (beside TRL's SFTConfig / GRPOConfig and ModelConfig), the model resolver and the run record.

Every hyper-parameter lives in a recipe YAML (`training/recipes/<model>/<sft|grpo>/<name>.yaml`); an unknown
key in it stops the parser before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schemas.frames import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from schemas.revision import git_revision

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = "tiny-random-qwen2.5-vl"  # built offline by training/tiny.py, cached by the builder's hash
# LoRA on the language model's linear layers and the vision-language merger; the vision tower stays frozen.
# A plain name list would also hit the vision blocks' mlp.{gate,up,down}_proj (PEFT matches suffixes).
LM_AND_MERGER = (
    r"^model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    r"|^model\.visual\.merger\.mlp\.(0|2)"
)


@dataclass
class ZoomArguments:
    """Data, frame and method settings of a lookcloser training stage."""

    dataset_path: str = field(default="", metadata={"help": "a release folder holding exactly one version"})
    dataset_name: str = field(default="", metadata={"help": "recorded with the checkpoint"})
    dataset_version: str = field(default="", metadata={"help": "recorded with the checkpoint"})
    dataset_config: str = field(default="all", metadata={"help": "all, or one organ"})
    train_split: str = "train"
    max_train_rows: int | None = field(default=None, metadata={"help": "use only the first N rows (smoke runs)"})
    min_pixels: int = field(default=DEFAULT_MIN_PIXELS, metadata={"help": "must equal the dataset version's"})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"help": "must equal the dataset version's"})
    crop_padding: float = field(default=0.0, metadata={"help": "the zoom tool's padding; the dataset's"})
    lora_target_regex: str = field(default=LM_AND_MERGER, metadata={"help": "PEFT target_modules as one regex"})
    sft_adapter: str | None = field(default=None, metadata={"help": "GRPO: the SFT stage's output folder"})
    consistency_threshold: float = field(default=0.75, metadata={"help": "delta of the group reward (paper eq. 2)"})
    reward_names: list[str] = field(
        default_factory=lambda: ["r_loc", "r_acc", "r_fmt", "r_group"], metadata={"help": "training/rewards.py"}
    )
    answer_parser_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible endpoint to parse answers the <answer> JSON misses"}
    )


def resolve_model(name_or_path: str) -> str:
    """A model name or folder; the tiny random model is built once into the cache (no download)."""
    if name_or_path != TINY_MODEL:
        return name_or_path
    builder = REPO / "training" / "tiny.py"
    digest = hashlib.sha256(builder.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("LOOKCLOSER_CACHE", Path.home() / ".cache" / "lookcloser"))
    folder = cache / "models" / f"{TINY_MODEL}-{digest}"
    if not (folder / "config.json").is_file():
        partial = folder.with_name(folder.name + ".partial")
        subprocess.run([sys.executable, str(builder), str(partial)], check=True, cwd=REPO)
        partial.replace(folder)
    return str(folder)


def lora_config(args: ZoomArguments, model_args: Any) -> Any:
    from peft import LoraConfig

    if not model_args.use_peft:
        return None
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=args.lora_target_regex,
        modules_to_save=model_args.lora_modules_to_save,
        task_type="CAUSAL_LM",
    )


def write_run_record(output_dir: str, *, stage: str, args: ZoomArguments, recipe: str, extra: dict[str, Any]) -> Path:
    """run.json next to the checkpoint: what was trained on, with which recipe and code, and how it went."""
    record = {
        "stage": stage,
        "dataset": {"name": args.dataset_name, "version": args.dataset_version, "path": args.dataset_path},
        "recipe": recipe,
        "git_revision": os.environ.get("LOOKCLOSER_GIT_REVISION") or git_revision(),
        "frame": {"min_pixels": args.min_pixels, "max_pixels": args.max_pixels, "crop_padding": args.crop_padding},
        "arguments": asdict(args),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    path = Path(output_dir) / "run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def recipe_path(argv: list[str]) -> str:
    return argv[argv.index("--config") + 1] if "--config" in argv else ""


def model_dtype(model_args: Any) -> Any:
    """The recipe's `dtype` as a torch dtype ("auto" when unset)."""
    import torch

    return getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else "auto"


def run_stage(stage: str, argv: list[str], make_parser: Callable[[], Any], build_trainer: Callable[..., Any]) -> None:
    """Parse the recipe (unknown keys stop here), build the trainer, train, save adapter + processor + run.json."""
    args, training_args, model_args = make_parser().parse_args_and_config(argv)
    trainer = build_trainer(args, training_args, model_args)
    result = trainer.train()
    trainer.save_model(training_args.output_dir)
    trainer.processing_class.save_pretrained(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        write_run_record(
            training_args.output_dir,
            stage=stage,
            args=args,
            recipe=recipe_path(argv),
            extra={
                "model": model_args.model_name_or_path,
                "steps": result.global_step,
                "train_loss": result.training_loss,
                "log_history": trainer.state.log_history,
            },
        )
