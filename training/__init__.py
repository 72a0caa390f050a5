"""SFT, GRPO, evaluation and recipes (DESIGN §7). Runs in its own environment (`.[train]`); never imports `flows`."""
