"""Training throughput of the 7B-shaped Qwen2.5-VL (random weights) on one GPU: SFT steps and rollout generation.

    $(scripts/ensure-train.sh)/bin/python bench/train_gpu.py --release RELEASE_DIR [--steps 5] [--batch 2]
    $(scripts/ensure-train.sh)/bin/python bench/train_gpu.py --release RELEASE_DIR --tiny   # the same path on CPU

Not a test: it needs a GPU and prints figures for docs/benchmarks.md. Same data path as training/sft.py:
rows of a published release collated by TRL's SFT collator with the zoom chat template, LoRA r = 32 on the
language model and merger (training/arguments.py), bf16, gradient checkpointing. The model has
Qwen2.5-VL-7B-Instruct's shapes (28 layers, hidden 3584, vision depth 32) and random weights, since weights
cannot be downloaded here. Reports SFT tokens/s (all tokens of the batch, images included), step time,
rollout generation tokens/s (batch × 128 new tokens, as GRPO's first turn) and peak GPU memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Qwen2.5-VL-7B-Instruct's config.json (text and vision shapes)
TEXT_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}
VISION_7B = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "window_size": 112,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "tokens_per_second": 2,
}


def build_model(tiny_dir: str, tiny: bool, device: str):
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    config = AutoConfig.from_pretrained(tiny_dir)  # special token ids of the offline tokenizer
    if not tiny:
        for key, value in TEXT_7B.items():
            setattr(config.text_config, key, value)
        for key, value in VISION_7B.items():
            setattr(config.vision_config, key, value)
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config)
    torch.set_default_dtype(torch.float32)
    return model


def main() -> None:
    import torch
    from peft import get_peft_model
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.arguments import TINY_MODEL, ZoomArguments, lora_config, resolve_model
    from training.data import load_split
    from training.zoom_format import load_processor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--min-pixels", type=int, default=3136)
    parser.add_argument("--max-pixels", type=int, default=12845056)
    parser.add_argument("--tiny", action="store_true", help="the tiny model on CPU (checks the script)")
    args = parser.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.tiny:
        raise SystemExit("no GPU: run with --tiny to check the script on CPU")

    tiny_dir = resolve_model(TINY_MODEL)
    processor = load_processor(tiny_dir, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    rows = load_split(args.release, config="all", split="train", max_rows=args.batch * (args.steps + 1))
    collator = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)
    start = time.perf_counter()
    model = build_model(tiny_dir, args.tiny, device)
    built = time.perf_counter() - start
    model = get_peft_model(model, lora_config(ZoomArguments(), type("M", (), {
        "use_peft": True, "lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "lora_modules_to_save": None,
    })()))  # fmt: skip
    if not args.tiny:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, tokens = [], []
    for step in range(args.steps + 1):  # step 0 warms up (kernels, allocator) and is not counted
        batch = collator([rows[i] for i in range(step * args.batch, (step + 1) * args.batch)])
        batch = {k: v.to(device) for k, v in batch.items()}
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
            tokens.append(int(batch["attention_mask"].sum()))
    prompt = collator([rows[0]] * args.batch)
    model.eval()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        inputs = {k: v.to(device) for k, v in prompt.items() if k != "labels"}
        t0 = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=128, min_new_tokens=128, do_sample=True, temperature=0.7)
        if device == "cuda":
            torch.cuda.synchronize()
        generated = (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
        gen_s = time.perf_counter() - t0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; model built in {built:.1f} s")
    print(f"parameters {total / 1e9:.2f} B, trainable (LoRA) {trainable / 1e6:.1f} M")
    step_s, per_batch, rate = statistics.median(times), statistics.mean(tokens), sum(tokens) / sum(times)
    print(f"SFT: batch {args.batch}, {per_batch:.0f} tokens/batch, step {step_s:.2f} s, {rate:.0f} tokens/s")
    print(f"rollout generation: {generated} tokens in {gen_s:.2f} s, {generated / gen_s:.0f} tokens/s")
    if device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
