"""A release in the dataset formats of two popular fine-tuning frameworks: LLaMA-Factory and ms-swift.

Both read a conversation with `<image>` placeholders in the text and an `images` list of files, in
placeholder order. The images are written once each (a full image is shared by the rows of its
attributes), as the release's own PNG bytes: the model-frame image and the crop, so the conversation's
`bbox_2d` stays valid as long as the framework's pixel budget does not shrink them again (the export
README says which setting to match).

- LLaMA-Factory: ShareGPT-style `messages` + `images` JSON Lines per split, and `dataset_info.json`
  naming the columns and role tags; image paths relative to the export folder (its `dataset_dir`).
- ms-swift: its standard `{"messages": [...], "images": [...]}` JSON Lines per split; absolute image
  paths, since ms-swift opens them as given.

Rows stream from the parquet shards a batch at a time: memory does not grow with the release.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from flows.catalog.ledger import StageCounter
from schemas.dataset import shard_paths

FORMATS = ("llamafactory", "swift")
Format = Literal["llamafactory", "swift"]
IMAGE_PLACEHOLDER = "<image>"
BATCH_ROWS = 64


@dataclass(kw_only=True)
class ExportSummary(StageCounter):
    """Every release row is out, in a split's file; the image files and the files written."""

    stage: str = "export"
    folder: Path
    rows: dict[str, int] = field(default_factory=dict)  # split → rows
    images: int = 0
    files: list[Path] = field(default_factory=list)


def text_with_placeholders(content: list[dict[str, Any]] | str) -> str:
    """One message's parts as text: each image part becomes `<image>` where it stood."""
    if isinstance(content, str):
        return content
    return "".join(IMAGE_PLACEHOLDER if part["type"] == "image" else (part.get("text") or "") for part in content)


def plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": text_with_placeholders(m["content"])} for m in messages]


def iter_release_rows(release: Path, config: str = "all") -> Iterator[dict[str, Any]]:
    """Rows of a release folder (one version's files), shard by shard, in file order."""
    for shard in shard_paths(release, config):
        parquet = pq.ParquetFile(shard)
        for batch in parquet.iter_batches(
            batch_size=BATCH_ROWS, columns=["id", "organ", "split", "messages", "images"]
        ):
            yield from batch.to_pylist()


def _write_images(row: dict[str, Any], images_dir: Path) -> list[Path]:
    """The row's images as files named by their release path (unique per image and per crop)."""
    paths = []
    for image in row["images"]:
        path = images_dir / row["organ"] / Path(image["path"]).name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            partial.write_bytes(image["bytes"])
            partial.replace(path)  # a killed export never leaves half an image under the final name
        paths.append(path)
    return paths


def export_release(release: Path, out: Path, fmt: Format, *, name: str, config: str = "all") -> ExportSummary:
    """Write the release (one version's folder) into `out` in the framework's format; re-runs overwrite."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(folder=out)
    handles: dict[str, Any] = {}
    images: set[Path] = set()
    try:
        for row in iter_release_rows(release, config):
            split = row["split"]
            if split not in handles:
                path = out / f"{name}_{split}.jsonl"
                handles[split] = path.with_suffix(".jsonl.partial").open("w", encoding="utf-8")
                summary.files.append(path)
            paths = _write_images(row, out / "images")
            images.update(paths)
            messages = plain_messages(row["messages"])
            if sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages) != len(paths):
                raise ValueError(f"row {row['id']}: placeholders and images differ")  # the gate forbids this
            listed = [str(p.relative_to(out)) for p in paths] if fmt == "llamafactory" else [str(p) for p in paths]
            handles[split].write(json.dumps({"messages": messages, "images": listed}, ensure_ascii=False) + "\n")
            summary.rows[split] = summary.rows.get(split, 0) + 1
            summary.count_out()  # no ledger row: an export is files, and memory must not grow with the release
    finally:
        for handle in handles.values():
            handle.close()
    for path in summary.files:
        path.with_suffix(".jsonl.partial").replace(path)
    summary.images = len(images)
    if fmt == "llamafactory":
        info = out / "dataset_info.json"
        info.write_text(json.dumps(llamafactory_dataset_info(name, sorted(summary.rows)), indent=2) + "\n")
        summary.files.append(info)
    summary.files.append(_write_readme(out, fmt, name, summary))
    return summary.check()


def llamafactory_dataset_info(name: str, splits: list[str]) -> dict[str, Any]:
    """One dataset entry per split (`--dataset NAME_train`), ShareGPT formatting with OpenAI-style role tags."""
    return {
        f"{name}_{split}": {
            "file_name": f"{name}_{split}.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
        for split in splits
    }


def _write_readme(out: Path, fmt: Format, name: str, summary: ExportSummary) -> Path:
    counts = ", ".join(f"{split} {n}" for split, n in sorted(summary.rows.items()))
    if fmt == "llamafactory":
        usage = [
            f"LLaMA-Factory: `dataset_dir: {out}`, `dataset: {name}_train`, `template: qwen2_vl`,",
            "and `image_max_pixels` at least the release's `max_pixels` (see its card), so the images",
            "are not resized again and `bbox_2d` stays in their frame.",
        ]
    else:
        usage = [
            f"ms-swift: `swift sft --dataset {out / (name + '_train.jsonl')} ...` with `MAX_PIXELS` at least the",
            "release's `max_pixels` (see its card), so the images are not resized again and `bbox_2d` stays",
            "in their frame.",
        ]
    text = [f"# {name} ({fmt} export)", "", f"Rows: {counts}; images: {summary.images} files.", "", *usage, ""]
    path = out / "README.md"
    path.write_text("\n".join(text))
    return path
