"""Push a tagged release to a Hugging Face Hub dataset repo and tag it there with the same version.

Only with a Hub token and repo id configured. Each version is mirrored as it is at its tag: shards of
an older version that are gone are deleted on the Hub in the same commit (`delete_patterns`), so the
Hub's tag holds exactly the local tag's files. Errors name the repo and the kind of failure, never
the token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class HubApi(Protocol):
    """The part of `huggingface_hub.HfApi` a push uses (a fake stands in for it in tests: no Hub here)."""

    def create_repo(self, repo_id: str, **kwargs: Any) -> Any: ...
    def list_repo_refs(self, repo_id: str, **kwargs: Any) -> Any: ...
    def upload_folder(self, **kwargs: Any) -> Any: ...
    def create_tag(self, repo_id: str, **kwargs: Any) -> Any: ...


class HubPushError(Exception):
    """The Hub refused or could not be reached; the local release is untouched."""


@dataclass(frozen=True)
class HubPush:
    repo_id: str
    version: str
    commit: str | None


def hub_api(token: str) -> HubApi:
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _failure(err: Exception, what: str) -> HubPushError:
    """A one-line error naming the repo and the kind of failure; the client's message may hold URLs or the token."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    return HubPushError(f"{what} failed ({f'HTTP {status}' if status else type(err).__name__})")


def push_version(api: HubApi, folder: Path, repo_id: str, version: str) -> HubPush:
    """Mirror `folder` (a checkout of `version`) to `repo_id` in one commit and tag that commit `version`."""
    try:
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            commit_message=f"{repo_id.split('/')[-1]} {version}",
            ignore_patterns=[".git", ".git/*", "*/.git/*"],
            delete_patterns=["data/**", "assets/**", "README.md"],  # files of older versions that are gone
        )
        oid = getattr(commit, "oid", None)
        api.create_tag(repo_id, repo_type="dataset", tag=version, revision=oid, exist_ok=True)
    except Exception as err:  # the Hub client raises many kinds
        raise _failure(err, f"pushing {version} to the Hub dataset {repo_id}") from None
    return HubPush(repo_id, version, oid)


def sync_versions(api: HubApi, repo_id: str, versions: list[str], folder_of: Callable[[str], Path]) -> list[HubPush]:
    """Push every local version the Hub lacks, oldest first (`folder_of(version)` is a checkout of that tag).

    The Hub's tags decide, so a run killed between the local tag and the Hub tag pushes on the next run,
    and a version the Hub has is never pushed twice.
    """
    try:
        api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
        present = {tag.name for tag in api.list_repo_refs(repo_id, repo_type="dataset").tags}
    except Exception as err:
        raise _failure(err, f"reaching the Hub dataset {repo_id}") from None
    return [push_version(api, folder_of(v), repo_id, v) for v in versions if v not in present]
