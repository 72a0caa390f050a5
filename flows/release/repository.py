"""A release folder under git: each release a commit tagged `vMAJOR.MINOR.PATCH`, each version a worktree.

`datasets.load_dataset(folder, revision=...)` ignores `revision` for a local folder, so a trainer
loads a version from a folder that holds exactly that tag: a detached worktree, created once per
version and reused. Content equal to the latest release is not tagged again.

Publishing is a commit and then an annotated tag. Git has no operation that writes both as one: the
commit moves the branch, the tag is a second ref, and even an `update-ref --stdin` transaction on the
files backend renames its ref locks one by one, so a process killed in between can leave a commit
without its tag. Releases therefore rely on completing such a commit on the next run instead:

- Every release commit names the version it is for in a trailer line `Release-Version: vX.Y.Z`.
- `commit_release` first looks at HEAD. A HEAD no release tag points at is an interrupted release.
  It is completed in place (tagged with its trailer's version, reported as created) only when nothing
  has moved since: the trailer's version is the one this run would create (the requested version, or
  the next one), that tag does not exist, HEAD's parent is the latest tagged commit (a root commit
  when there is no tag yet), and the folder's content is exactly HEAD's. In every other case (another
  version asked for, content changed since, a commit without a trailer) HEAD is rolled back to the
  latest tagged commit with `git reset --soft` (the folder's content stays, staged) and the release is
  committed again. That is the safer choice: no version is ever tagged on content this run did not
  validate, a rolled-back commit was never tagged (so never loaded by a trainer nor pushed to the Hub,
  which pushes tags), and existing tags are never moved. An untagged HEAD that is not a descendant of
  the latest tag is not touched: it raises ReleaseError for an operator to look at.
- `discard_uncommitted` (a blocked release) rolls an interrupted release back with `git reset --hard`,
  so the folder is the latest tagged release again.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
GIT_IDENTITY = ("-c", "user.name=lookcloser", "-c", "user.email=lookcloser@localhost")
VERSION_TRAILER = "Release-Version"
_TRAILER_RE = re.compile(rf"^{VERSION_TRAILER}:[ \t]*(\S+)[ \t]*$", re.MULTILINE)


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
    """Put the folder back to its latest release (or empty it before the first): a blocked release leaves nothing.

    An interrupted release (a commit no tag points at) is rolled back too, with `git reset --hard`.
    """
    if _has_commits(folder):
        if _untagged_head(folder) is not None:
            _roll_back_to_latest_release(folder, hard=True)
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


def release_version_of(folder: Path, commit: str) -> str | None:
    """The version a release commit was made for (its `Release-Version:` trailer), or None."""
    found = _TRAILER_RE.findall(_git(folder, "log", "-1", "--format=%B", commit))
    return found[-1] if found and VERSION_RE.match(found[-1]) else None


def _head(folder: Path) -> str | None:
    if not _has_commits(folder):
        return None
    return _git(folder, "rev-parse", "HEAD")


def _release_tags_at(folder: Path, commit: str) -> list[str]:
    return [t for t in _git(folder, "tag", "--list", "v*", "--points-at", commit).splitlines() if VERSION_RE.match(t)]


def _untagged_head(folder: Path) -> str | None:
    """HEAD's commit when no release tag points at it (a publish stopped between commit and tag), else None."""
    head = _head(folder)
    if head is None or _release_tags_at(folder, head):
        return None
    return head


def _latest_release_commit(folder: Path) -> str | None:
    existing = versions(folder)
    return commit_of(folder, existing[-1]) if existing else None


def _roll_back_to_latest_release(folder: Path, *, hard: bool) -> None:
    """Move the branch back to the latest tagged commit (unborn before the first release).

    `hard=False` keeps the folder's content staged, to be committed again; `hard=True` also resets the content.
    """
    head, latest = _head(folder), _latest_release_commit(folder)
    if head is None:
        return
    if latest is None:
        _git(folder, "update-ref", "-d", "HEAD")  # the branch becomes unborn; the index keeps the content
        if hard:
            _git(folder, "read-tree", "--empty")
        return
    probe = subprocess.run(["git", "-C", str(folder), "merge-base", "--is-ancestor", latest, head], capture_output=True)
    if probe.returncode != 0:
        raise ReleaseError(f"{folder}: HEAD {head[:12]} is untagged and not after the latest release; fix it by hand")
    _git(folder, "reset", "-q", "--hard" if hard else "--soft", latest)


def _commit(folder: Path, version: str, message: str) -> None:
    """The first half of a release: a commit naming its version in a trailer (the tag comes in `_tag`)."""
    _git(folder, "commit", "-q", "--allow-empty", "-m", message, "-m", f"{VERSION_TRAILER}: {version}")


def _tag(folder: Path, version: str, message: str, commit: str = "HEAD") -> None:
    """The second half of a release: the annotated tag on the release commit."""
    _git(folder, "tag", "-a", version, "-m", message, commit)


def _check_new_version(folder: Path, version: str, existing: list[str]) -> None:
    if version in existing:
        raise ReleaseError(f"version {version} already exists in {folder}")
    if existing and parse_version(version) <= parse_version(existing[-1]):
        raise ReleaseError(f"version {version} is not after the latest release {existing[-1]}")


def _complete_interrupted_release(folder: Path, version: str | None, message: str) -> str | None:
    """Deal with an untagged HEAD before committing (module docstring): the tag made in place, or None.

    None means there was nothing to complete, or HEAD was rolled back (soft) to the latest release.
    """
    head = _untagged_head(folder)
    if head is None:
        return None
    existing = versions(folder)
    intended = release_version_of(folder, head)
    wanted = version or next_version(folder)
    latest = _latest_release_commit(folder)
    parents = _git(folder, "rev-list", "--parents", "-n", "1", head).split()[1:]
    in_place = (
        intended is not None
        and intended == wanted
        and intended not in existing
        and (not existing or parse_version(intended) > parse_version(existing[-1]))
        and parents == ([latest] if latest else [])
        and not _git(folder, "status", "--porcelain")
    )
    if in_place:
        _tag(folder, intended, message, head)
        return intended
    _roll_back_to_latest_release(folder, hard=False)
    return None


def commit_release(folder: Path, version: str | None, message: str) -> tuple[str, bool]:
    """Commit the folder's content and tag it; `(tag, created)`. Unchanged content keeps the latest tag.

    An interrupted earlier release (a commit without its tag) is completed or redone first (module docstring).
    """
    ensure_repository(folder)
    _git(folder, "add", "-A")
    completed = _complete_interrupted_release(folder, version, message)
    if completed is not None:
        return completed, True
    existing = versions(folder)
    if existing and not _git(folder, "status", "--porcelain"):
        return existing[-1], False
    version = version or next_version(folder)
    _check_new_version(folder, version, existing)
    _commit(folder, version, message)
    _tag(folder, version, message)
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
