#!/usr/bin/env bash
# Build the Label Studio server's own virtualenv and its pre-migrated template data dir when missing
# (first time: about 2 minutes for the venv, about a minute for the template; afterwards: instant).
# They live in $LOOKCLOSER_CACHE (default ~/.cache/lookcloser), named after the hash of
# annotation/labelstudio-requirements.txt, so changing a pin builds new ones. Safe to run concurrently.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
"$PYTHON" -c '
import logging
from annotation.server_build import ensure_labelstudio_template, labelstudio_venv

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
template = ensure_labelstudio_template()
print(f"Label Studio venv: {labelstudio_venv()}")
print(f"Label Studio template data dir: {template}")
'
