"""Releases: published rows, parquet shards in the Hub layout, the dataset card, versioned folders (DESIGN §6)."""
