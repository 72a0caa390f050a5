"""The checkout's git revision: the code provenance that every training and evaluation run record carries.

It lives in the contract because both sides record it and neither may import the other: the curation side
(flows/stages/train.py, evaluate.py) and the training jobs (training/arguments.py). A training job is handed
the launching checkout's revision as LOOKCLOSER_GIT_REVISION, so a job run from a copy without .git still
records where its code came from.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_revision() -> str:
    """HEAD, with `-dirty` when the working tree has changes; `unknown` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        changes = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if changes.strip() else "")
