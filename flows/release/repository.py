"""A release folder under git: each release a commit tagged `vMAJOR.MINOR.PATCH`, each version a worktree.

`datasets.load_dataset(folder, revision=...)` ignores `revision` for a local folder, so a trainer
loads a version from a folder that holds exactly that tag: a detached worktree, created once per
version and reused. Content equal to the latest release is not tagged again.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
GIT_IDENTITY = ("-c", "user.name=lookcloser", "-c", "user.email=lookcloser@localhost")


class ReleaseError(ValueError):
    """A version that is malformed, already taken or unknown."""


def _git(folder: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *GIT_IDENTITY, "-C", str(folder), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {folder}: {result.stderr.strip()}")
    return result.stdout.strip()


def parse_version(version: str) -> tuple[int, int, int]:
    match = VERSION_RE.match(version)
    if not match:
        raise ReleaseError(f"version {version!r} is not vMAJOR.MINOR.PATCH")
    return int(match[1]), int(match[2]), int(match[3])


def ensure_repository(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / ".git").exists():
        _git(folder, "init", "-q", "-b", "main")


def discard_uncommitted(folder: Path) -> None:
    """Put the folder back to its latest commit (or empty it before the first): a blocked release leaves nothing."""
    if _has_commits(folder):
        _git(folder, "checkout", "-q", "--", ".")  # also brings back the shards the new release removed
    _git(folder, "clean", "-q", "-fd")


def _has_commits(folder: Path) -> bool:
    result = subprocess.run(["git", "-C", str(folder), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True)
    return result.returncode == 0


def versions(folder: Path) -> list[str]:
    """Release tags, oldest first."""
    if not (folder / ".git").exists():
        return []
    tags = [t for t in _git(folder, "tag", "--list", "v*").splitlines() if VERSION_RE.match(t)]
    return sorted(tags, key=parse_version)


def next_version(folder: Path) -> str:
    """The next patch version, or v1.0.0 for a first release."""
    existing = versions(folder)
    if not existing:
        return "v1.0.0"
    major, minor, patch = parse_version(existing[-1])
    return f"v{major}.{minor}.{patch + 1}"


def commit_release(folder: Path, version: str | None, message: str) -> tuple[str, bool]:
    """Commit the folder's content and tag it; `(tag, created)`. Unchanged content keeps the latest tag."""
    ensure_repository(folder)
    _git(folder, "add", "-A")
    existing = versions(folder)
    if existing and not _git(folder, "status", "--porcelain"):
        return existing[-1], False
    version = version or next_version(folder)
    if version in existing:
        raise ReleaseError(f"version {version} already exists in {folder}")
    if existing and parse_version(version) <= parse_version(existing[-1]):
        raise ReleaseError(f"version {version} is not after the latest release {existing[-1]}")
    _git(folder, "commit", "-q", "--allow-empty", "-m", message)
    _git(folder, "tag", "-a", version, "-m", message)
    return version, True


def commit_of(folder: Path, version: str) -> str:
    return _git(folder, "rev-list", "-n", "1", version)


def version_path(folder: Path, version: str, worktrees: Path) -> Path:
    """A folder holding exactly `version` (a detached worktree under `worktrees`), created once and reused."""
    parse_version(version)
    if version not in versions(folder):
        known = ", ".join(versions(folder)) or "none"
        raise ReleaseError(f"{folder.name} has no version {version} (releases: {known})")
    target = worktrees / version
    commit = _git(folder, "rev-list", "-n", "1", version)
    if target.exists() and _git(target, "rev-parse", "HEAD") == commit:
        return target
    worktrees.mkdir(parents=True, exist_ok=True)
    _git(folder, "worktree", "prune")
    _git(folder, "worktree", "add", "-q", "--detach", str(target), version)
    return target
