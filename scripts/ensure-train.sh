#!/usr/bin/env bash
# Build the training job's own virtualenv when missing (first time: a few minutes; afterwards: instant).
# It lives in $LOOKCLOSER_CACHE (default ~/.cache/lookcloser), named after the hash of
# training/requirements.txt and this script, so changing a pin builds a new one. Prints the venv path.
# The project's code is not installed into it: jobs run with PYTHONPATH at the checkout, so one cached
# environment serves every clone.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${LOOKCLOSER_CACHE:-$HOME/.cache/lookcloser}"
HASH=$(cat training/requirements.txt scripts/ensure-train.sh | sha256sum | cut -c1-16)
VENV="$CACHE/train-$HASH"
PYTHON="${PYTHON_FOR_TRAIN:-$(command -v python3.11 || command -v python3)}"
mkdir -p "$CACHE"
exec 9>"$VENV.lock"
flock 9  # concurrent callers wait for one build
if [ ! -f "$VENV/.complete" ]; then
  echo "building the training virtualenv in $VENV (a few minutes)" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # (pip warns once per package about this machine's unused extra-index folders: filtered out)
  "$VENV/bin/python" -m pip install -q -U pip 2> >(grep -v "is ignored: it is neither" >&2)
  # torch first, alone, so the +cpu build from the find-links wins and nothing pulls a CUDA build.
  "$VENV/bin/python" -m pip install -q "$(grep '^torch==' training/requirements.txt)" 2> >(grep -v "is ignored: it is neither" >&2)
  "$VENV/bin/python" -m pip install -q -r training/requirements.txt 2> >(grep -v "is ignored: it is neither" >&2)
  if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.endswith('+cpu') else 1)"; then
    # CPU build: PyPI's torchvision is CUDA-linked, its native ops cannot load, and 0.28's
    # _meta_registrations then crashes on import (the Qwen2-VL processors import torchvision).
    # Make those registrations conditional, as scripts/ensure-vllm.sh does.
    TV=$("$VENV/bin/python" -c "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])")
    sed -i -E 's|^@torch.library.register_fake\("(torchvision::[a-z_]+)"\)|@(torch.library.register_fake("\1") if torchvision.extension._has_ops() else (lambda f: f))|' "$TV/_meta_registrations.py"
  fi
  "$VENV/bin/python" -c "import torch, torchvision, transformers, trl, peft; from transformers import Qwen2_5_VLProcessor"
  touch "$VENV/.complete"
fi
echo "$VENV"
