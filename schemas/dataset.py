"""The published dataset's layout on disk (DESIGN §6): `data/<config>/<split>-NNNNN-of-NNNNN.parquet`, one
config per organ; the config `all` is every organ's shards."""

from __future__ import annotations

from pathlib import Path


def shard_paths(release: Path, config: str) -> list[Path]:
    pattern = "data/*/*.parquet" if config == "all" else f"data/{config}/*.parquet"
    return sorted(release.glob(pattern))


def split_shards(release: Path, config: str, split: str) -> list[Path]:
    """The shards of one split of one config."""
    return [shard for shard in shard_paths(release, config) if shard.name.startswith(f"{split}-")]
