"""A publish stopped between `git commit` and `git tag` is completed by the next run (issue 20).

Plain release folders with a couple of files go through `commit_release` directly; the kill is simulated
by making the tagging half raise, and for real by a subprocess that SIGKILLs itself before tagging.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.release import repository
from flows.release.repository import (
    ReleaseError,
    commit_release,
    discard_uncommitted,
    release_version_of,
    versions,
)

ROOT = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands for the process dying: nothing after the raising call runs."""


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout.strip()


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def commit_count(folder: Path) -> int:
    return int(git(folder, "rev-list", "--count", "HEAD"))


def refs(folder: Path, tag: str) -> tuple[str, str]:
    """The tag object and the commit it points at: both must stay unchanged for an old release."""
    return git(folder, "rev-parse", f"refs/tags/{tag}"), git(folder, "rev-parse", f"{tag}^{{commit}}")


@pytest.fixture
def released(tmp_path: Path) -> Path:
    """A folder with one complete release v1.0.0 of two files."""
    folder = tmp_path / "release"
    folder.mkdir()
    write(folder, {"README.md": "# first\n", "data/train.jsonl": '{"id": 1}\n'})
    assert commit_release(folder, None, "first") == ("v1.0.0", True)
    return folder


def kill_before_tagging(monkeypatch: pytest.MonkeyPatch, folder: Path, version: str | None = None) -> str:
    """Run `commit_release` with the tagging half dying; returns the commit it left behind, untagged."""
    before = git(folder, "rev-parse", "HEAD") if versions(folder) else None

    def killed(*args: object, **kwargs: object) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(repository, "_tag", killed)
        with pytest.raises(Killed):
            commit_release(folder, version, "second")
    head = git(folder, "rev-parse", "HEAD")
    assert head != before and git(folder, "tag", "--points-at", head) == ""
    return head


def change(folder: Path) -> None:
    write(folder, {"README.md": "# second\n", "data/train.jsonl": '{"id": 1}\n{"id": 2}\n'})


def test_a_release_commit_names_its_version_in_a_trailer(released: Path) -> None:
    assert release_version_of(released, "HEAD") == "v1.0.0"
    assert "Release-Version: v1.0.0" in git(released, "log", "-1", "--format=%B")


def test_a_release_stopped_before_its_tag_is_tagged_by_the_next_run(
    released: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = refs(released, "v1.0.0")
    change(released)
    stopped = kill_before_tagging(monkeypatch, released)
    assert versions(released) == ["v1.0.0"] and release_version_of(released, stopped) == "v1.0.1"

    assert commit_release(released, None, "second") == ("v1.0.1", True)
    assert versions(released) == ["v1.0.0", "v1.0.1"]
    assert git(released, "rev-parse", "v1.0.1^{commit}") == stopped  # completed in place: no duplicate commit
    assert commit_count(released) == 2
    assert git(released, "show", "v1.0.1:README.md") == "# second"
    assert refs(released, "v1.0.0") == old
    assert commit_release(released, None, "second") == ("v1.0.1", False)


def test_a_rerun_with_other_content_redoes_the_stopped_release(released: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = refs(released, "v1.0.0")
    change(released)
    stopped = kill_before_tagging(monkeypatch, released)
    write(released, {"data/train.jsonl": '{"id": 3}\n'})

    assert commit_release(released, None, "third") == ("v1.0.1", True)
    assert git(released, "rev-parse", "v1.0.1^{commit}") != stopped
    assert commit_count(released) == 2  # the stopped commit was rolled back, not kept below the new one
    assert git(released, "show", "v1.0.1:data/train.jsonl") == '{"id": 3}'
    assert git(released, "show", "v1.0.1:README.md") == "# second"
    assert refs(released, "v1.0.0") == old and versions(released) == ["v1.0.0", "v1.0.1"]


def test_a_rerun_asking_another_version_redoes_the_stopped_release(
    released: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    change(released)
    kill_before_tagging(monkeypatch, released)
    assert commit_release(released, "v2.0.0", "second") == ("v2.0.0", True)
    assert versions(released) == ["v1.0.0", "v2.0.0"] and commit_count(released) == 2
    assert release_version_of(released, "v2.0.0") == "v2.0.0"


def test_a_rerun_back_to_the_old_content_creates_nothing(released: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = refs(released, "v1.0.0")
    change(released)
    kill_before_tagging(monkeypatch, released)
    write(released, {"README.md": "# first\n", "data/train.jsonl": '{"id": 1}\n'})
    assert commit_release(released, None, "first again") == ("v1.0.0", False)
    assert git(released, "rev-parse", "HEAD") == old[1] and versions(released) == ["v1.0.0"]


def test_a_first_release_stopped_before_its_tag_is_tagged_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "release"
    folder.mkdir()
    write(folder, {"README.md": "# first\n"})
    stopped = kill_before_tagging(monkeypatch, folder)
    assert versions(folder) == []
    assert commit_release(folder, None, "first") == ("v1.0.0", True)
    assert git(folder, "rev-parse", "v1.0.0^{commit}") == stopped and commit_count(folder) == 1


def test_an_untagged_commit_without_a_trailer_is_redone(released: Path) -> None:
    change(released)
    git(released, "add", "-A")
    git(released, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "by hand")
    assert commit_release(released, None, "second") == ("v1.0.1", True)
    assert commit_count(released) == 2 and release_version_of(released, "v1.0.1") == "v1.0.1"
    assert git(released, "show", "v1.0.1:README.md") == "# second"


def test_a_blocked_release_after_a_stopped_one_leaves_the_latest_release(
    released: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = refs(released, "v1.0.0")
    change(released)
    kill_before_tagging(monkeypatch, released)
    write(released, {"data/extra.jsonl": "{}\n"})
    discard_uncommitted(released)
    assert git(released, "rev-parse", "HEAD") == old[1]
    assert (released / "README.md").read_text() == "# first\n" and not (released / "data/extra.jsonl").exists()
    assert git(released, "status", "--porcelain") == ""


def test_an_untagged_head_not_after_the_latest_release_is_refused(released: Path) -> None:
    git(released, "checkout", "-q", "--orphan", "other")
    write(released, {"README.md": "# elsewhere\n"})
    git(released, "add", "-A")
    git(released, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "unrelated")
    with pytest.raises(ReleaseError, match="not after the latest release"):
        commit_release(released, None, "second")


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from flows.release import repository

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

repository._tag = killed
repository.commit_release(Path(sys.argv[1]), None, "second")
print("not killed")
"""


def test_a_publish_killed_by_sigkill_after_the_commit_is_completed_by_the_next_run(released: Path) -> None:
    old = refs(released, "v1.0.0")
    change(released)
    run = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(released)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert "not killed" not in run.stdout
    stopped = git(released, "rev-parse", "HEAD")
    assert stopped != old[1] and versions(released) == ["v1.0.0"] and commit_count(released) == 2

    assert commit_release(released, None, "second") == ("v1.0.1", True)
    assert git(released, "rev-parse", "v1.0.1^{commit}") == stopped and commit_count(released) == 2
    assert git(released, "show", "v1.0.1:README.md") == "# second"
    assert refs(released, "v1.0.0") == old and versions(released) == ["v1.0.0", "v1.0.1"]


def test_a_rerun_without_changes_after_a_complete_release_creates_nothing(released: Path) -> None:
    old = refs(released, "v1.0.0")
    assert commit_release(released, None, "first") == ("v1.0.0", False)
    assert commit_release(released, None, "first") == ("v1.0.0", False)
    assert commit_count(released) == 1 and versions(released) == ["v1.0.0"] and refs(released, "v1.0.0") == old
