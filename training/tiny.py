"""A tiny, randomly initialised Qwen2.5-VL checkpoint with its processor, built fully offline.

Why it exists: every path that trains or serves the student model (SFT, GRPO, the vLLM-CPU server of the integration
tests) must run on a CPU-only machine with no network. A real Qwen2.5-VL cannot be downloaded there and would be far
too slow; this factory writes a model folder of about 1.5 MB with the same architecture, the same special tokens,
chat template and image processor, in a few seconds. Its outputs are random bytes: tests assert on protocol shape
(choice counts, usage, finish reasons, image tokens counted), never on content.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on a few sentences (it covers all 256 bytes, so
any text encodes), and the weights are random. Sizes follow shared/research/vllmcpu.md §2: head_dim 32 is the smallest
head size vLLM's CPU attention accepts; the image processor's pixel budget keeps an image to at most 64 tokens.
Runs under transformers 5.19 (the vLLM-CPU venv) and 5.23 (the training environment).

Usage: python training/tiny.py OUT_DIR
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2TokenizerFast,
)
from transformers.models.qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

logger = logging.getLogger(__name__)

# Qwen2/2.5 special tokens, in Qwen's order (their ids come after the BPE vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# The chat template of the Qwen2-VL / Qwen2.5-VL instruct models.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The BPE merges only shape how text splits into tokens; including the words our prompts and answers use keeps those
# prompts short. Any other text still encodes, byte by byte.
TOKENIZER_CORPUS = (
    "You are a helpful assistant. Describe the image in detail.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    '{"field": "value", "items": [1, 2, 3], "ok": true, "name": null}',
    "system user assistant image video picture text answer question",
    '{"search": "I scan the image and zoom in on the lesion.", "diagnosis": "The margin is clear."}',
    '<think>search</think> <tool_call>{"name": "zoom", "arguments": {"bbox_2d": [10, 20, 110, 120]}}</tool_call>',
    "<answer>Hypoechoic</answer> <answer>Oval</answer> <answer>Circumscribed</answer>",
    "breast liver thyroid ultrasound lesion mass nodule margin shape boundary echo pattern",
)
CORPUS_REPEATS = 50
BPE_VOCAB_SIZE = 600
MODEL_MAX_LENGTH = 32768
VOCAB_MULTIPLE = 64  # the embedding is padded to a multiple of this, as real checkpoints are

# Small pixel budget, so each image becomes only a few visual tokens (at most 64 after the 2x2 merge).
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 64
PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2

HIDDEN_SIZE = 64  # 2 heads x head_dim 32: vLLM's CPU attention needs head_dim >= 32
INTERMEDIATE_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = 2
NUM_KV_HEADS = 1
MAX_POSITIONS = 32768  # like Qwen2.5-VL: room for a long teacher prompt plus two images
MROPE_SECTION = [4, 6, 6]  # sums to head_dim / 2
ROPE_THETA = 1_000_000.0
VISION_WINDOW_SIZE = 112
VISION_FULL_ATTENTION_BLOCKS = [1]  # each index must be < the vision depth
TOKENS_PER_SECOND = 2

# Like real Qwen2.5-VL-Instruct checkpoints: sampling is on by default, so a request's temperature > 0 samples.
GENERATION_DEFAULTS: dict[str, Any] = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20}


def build_tokenizer() -> Qwen2TokenizerFast:
    """A byte-level BPE tokenizer trained in memory, with the Qwen special tokens and chat template."""
    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, so any text encodes
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(list(TOKENIZER_CORPUS) * CORPUS_REPEATS, trainer)
    additional = list(SPECIAL_TOKENS[1:])
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        unk_token=None,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=additional,
        model_max_length=MODEL_MAX_LENGTH,
    )
    # the constructor records the names; adding them again assigns ids to the ones the trained vocab lacks
    tokenizer.add_special_tokens({"additional_special_tokens": additional})
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer: Qwen2TokenizerFast) -> Qwen2_5_VLProcessor:
    """The Qwen2.5-VL processor (image + video processors) with a small pixel budget."""
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    patches = {"patch_size": PATCH_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE, "merge_size": MERGE_SIZE}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, **patches),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size, **patches),  # the processor always has one
        chat_template=CHAT_TEMPLATE,
    )


def build_config(vocab_size: int, token_ids: dict[str, int]) -> Qwen2_5_VLConfig:
    """Tiny text and vision configs, wired to the tokenizer's special token ids."""
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-6,
        # transformers 5 spelling (rope_scaling is converted to it)
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": MROPE_SECTION},
        "bos_token_id": token_ids[PAD_TOKEN],
        "eos_token_id": token_ids[EOS_TOKEN],
        "pad_token_id": token_ids[PAD_TOKEN],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": 2,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_heads": NUM_HEADS,  # vision head_dim 32 as well
        "in_channels": 3,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "window_size": VISION_WINDOW_SIZE,
        "fullatt_block_indexes": VISION_FULL_ATTENTION_BLOCKS,
        "out_hidden_size": HIDDEN_SIZE,  # the merger projects into the text model's hidden size
        "tokens_per_second": TOKENS_PER_SECOND,
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_tiny_qwen25vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL model and its processor into `out_dir` (same seed, same weights)."""
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    vocab_size = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE  # rounded up
    config = build_config(vocab_size, token_ids)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config.eos_token_id = token_ids[EOS_TOKEN]
    model.generation_config.pad_token_id = token_ids[PAD_TOKEN]
    for name, value in GENERATION_DEFAULTS.items():
        setattr(model.generation_config, name, value)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    logger.info(
        "tiny Qwen2.5-VL: vocab %d, %d parameters, saved to %s",
        len(tokenizer),
        sum(p.numel() for p in model.parameters()),
        out_dir,
    )
    return out_dir


def main() -> None:
    """Command line: python training/tiny.py OUT_DIR [--seed N]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_tiny_qwen25vl(args.out_dir, seed=args.seed)


if __name__ == "__main__":
    main()
