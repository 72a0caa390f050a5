"""The one place where the paper's tool-call format meets TRL and transformers.

The paper's zoom call is nameless: `<tool_call>{"bbox_2d": [x1, y1, x2, y2]}</tool_call>`. TRL 1.16's
multi-turn tool loop needs three things for it, all set up here and nowhere else:

1. a chat template that renders tool calls that way, renders the tool's reply (the crop) as a user
   turn, and marks assistant turns for the assistant-only loss (`zoom_chat_template.jinja`);
2. a `response_template` on the tokenizer (the transformers >= 5.13 response parser TRL uses) that
   turns the generated text into a call of the tool `zoom_in`;
3. `supports_tool_calling` accepting the template: TRL requires templates to render a tool *name*,
   which this format has none of. It is replaced on the module that uses it; `check_trl_adaptation`
   fails loudly when a TRL upgrade moves it (and a test calls it).

`prepare_processor` also pins the image processor to the dataset version's `min_pixels` /
`max_pixels`, so the model sees images in exactly the frame `bbox_2d` was written in.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

TRL_VERSION = "1.16.0"  # the adaptation below was written and tested against this version
TOOL_NAME = "zoom_in"
CHAT_TEMPLATE = (Path(__file__).with_name("zoom_chat_template.jinja")).read_text()

RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": {"name": TOOL_NAME, "arguments": "{content}"}},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


class TrlAdaptationError(RuntimeError):
    """The installed TRL no longer has what the adaptation patches: re-check zoom_format.py against it."""


def check_trl_adaptation() -> None:
    """Fail loudly if TRL moved what this module adapts (version, the patched name, the tool loop)."""
    import trl

    grpo = importlib.import_module("trl.trainer.grpo_trainer")
    if trl.__version__ != TRL_VERSION:
        raise TrlAdaptationError(f"zoom_format.py was written for trl {TRL_VERSION}, found {trl.__version__}")
    for name in ("supports_tool_calling", "GRPOTrainer"):
        if not hasattr(grpo, name):
            raise TrlAdaptationError(f"trl.trainer.grpo_trainer.{name} is gone")
    for method in ("_tool_call_loop", "_get_tool_suffix_ids"):
        if not hasattr(grpo.GRPOTrainer, method):
            raise TrlAdaptationError(f"GRPOTrainer.{method} is gone: the multi-turn tool loop changed")


def allow_nameless_tool_calls() -> None:
    """Let GRPOTrainer accept a template whose tool calls carry no name (checked: TRL still has the hook)."""
    check_trl_adaptation()
    grpo = importlib.import_module("trl.trainer.grpo_trainer")
    grpo.supports_tool_calling = lambda processing_class: True


def prepare_processor(processor: Any, *, min_pixels: int, max_pixels: int) -> Any:
    """Install the zoom chat template and response parser; pin the pixel budget to the dataset's frame."""
    processor.chat_template = CHAT_TEMPLATE
    processor.tokenizer.chat_template = CHAT_TEMPLATE
    processor.tokenizer.response_template = RESPONSE_TEMPLATE
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if hasattr(image_processor, name):
            setattr(image_processor, name, value)
    return processor


def load_processor(model: str, *, min_pixels: int, max_pixels: int) -> Any:
    from transformers import AutoProcessor

    return prepare_processor(AutoProcessor.from_pretrained(model), min_pixels=min_pixels, max_pixels=max_pixels)
