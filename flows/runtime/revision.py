"""The checkout's git revision, recorded with every training and evaluation run (and handed to training jobs as
LOOKCLOSER_GIT_REVISION, so a job run from a copy without .git still records where its code came from)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def git_revision() -> str:
    """HEAD, with `-dirty` when the working tree has changes; `unknown` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        changes = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if changes.strip() else "")
