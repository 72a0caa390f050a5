"""Where a dataset's release lives in the workspace, and what lives next to it (no Prefect, no GX imports)."""

from __future__ import annotations

from pathlib import Path

from flows.runtime.settings import Settings


def release_folder(settings: Settings, name: str) -> Path:
    """The git repository whose tagged commits are the releases."""
    return settings.workspace.resolve() / "releases" / name


def docs_folder(settings: Settings, name: str) -> Path:
    """Data Docs live next to the release, not in it: their timestamps would make every release differ."""
    return settings.workspace.resolve() / "releases" / f"{name}.data-docs"


def worktrees_folder(settings: Settings, name: str) -> Path:
    """One detached worktree per version that was asked for (`lookcloser dataset path`)."""
    return settings.workspace.resolve() / "releases" / f"{name}.versions"
