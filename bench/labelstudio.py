"""Label Studio import and pull cost against raw single calls, on a real local server.

    .venv/bin/python bench/labelstudio.py [--tasks 10000]

import: `LabelStudioClient.import_tasks` (idempotency lookup + chunked bulk import) of N tasks
        vs. one raw `POST /api/projects/{id}/import` of the same N tasks into a fresh project.
pull:   the pull path (export snapshot + validation + conversion to ReaderAnnotation + catalog write)
        of 2·N annotations (two per task, as two readers) vs. one raw export call of the same project.
Prints both ratios (target ≤ 1.5 each). Needs the server venv (scripts/ensure-labelstudio.sh).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from annotation.client import LabelStudioClient
from annotation.label_config import label_config, result_from_reading
from annotation.projects import image_task
from annotation.readings import readings_from_export
from annotation.server import LabelStudioServer, ensure_labelstudio_venv, free_port, prepare_data_dir
from flows.catalog import Catalog, Outcome
from schemas.records import ImageRecord

TARGET = 1.5
ORGAN = "liver"
SIZE = (640, 440)
LESION = ([100.0, 120.0, 220.0, 230.0], {"echogenicity": "Hypoechoic", "shape": "Oval", "boundary": "Clear"})


def tasks(n: int, *, with_annotations: bool = False) -> list[dict]:
    out = []
    for k in range(n):
        task = image_task(
            image_id=f"{k:064x}", organ=ORGAN, storage_key=f"images/{k:064x}.png", size=SIZE, boxes=[LESION[0]]
        )
        if with_annotations:
            result = result_from_reading(ORGAN, [LESION], SIZE)
            task["annotations"] = [{"result": result, "completed_by": 1}]
        out.append(task)
    return out


def raw_import(server: LabelStudioServer, project_id: int, payload: list[dict]) -> float:
    start = time.perf_counter()
    response = httpx.post(
        f"{server.url}/api/projects/{project_id}/import",
        json=payload,
        timeout=1800,
        headers={"Authorization": f"Token {server.admin_token}"},
    )
    response.raise_for_status()
    return time.perf_counter() - start


def raw_export(server: LabelStudioServer, project_id: int) -> float:
    start = time.perf_counter()
    response = httpx.get(
        f"{server.url}/api/projects/{project_id}/export",
        params={"exportType": "JSON"},
        timeout=1800,
        headers={"Authorization": f"Token {server.admin_token}"},
    )
    response.raise_for_status()
    return time.perf_counter() - start


def pull_path(client: LabelStudioClient, catalog: Catalog, project_id: int) -> tuple[float, int]:
    start = time.perf_counter()
    exported = client.export_tasks(project_id)
    readings, ledger = [], []
    for pulled in readings_from_export(project_id, ORGAN, exported, lambda uid: f"R{uid}"):
        if pulled.reason is None:
            readings.extend(pulled.readings)
            ledger.append((pulled.item_key, Outcome.out, None, None))
        else:
            ledger.append((pulled.item_key, Outcome.quarantined, pulled.reason, None))
    catalog.save_pulled(readings, ledger)
    return time.perf_counter() - start, len(ledger)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "files" / "images").mkdir(parents=True)
        server = LabelStudioServer(
            data_dir=prepare_data_dir(root / "ls"),
            port=free_port(),
            files_root=root / "files",
            venv=ensure_labelstudio_venv(),
        )
        with server:
            client = LabelStudioClient(server.url, server.admin_token, timeout_s=1800)
            config = label_config(ORGAN)
            raw_project, our_project = (client.ensure_project(f"bench {name}", config) for name in ("raw", "ours"))
            payload = tasks(args.tasks)
            t_raw = raw_import(server, raw_project, payload)
            start = time.perf_counter()
            present = client.task_ids_by_image(our_project)
            client.import_tasks(our_project, [t for t in payload if t["data"]["image_id"] not in present])
            t_ours = time.perf_counter() - start
            print(
                f"import {args.tasks} tasks: raw {t_raw:.1f} s, ours {t_ours:.1f} s, ratio {t_ours / t_raw:.2f} "
                f"(target <= {TARGET}: {'met' if t_ours / t_raw <= TARGET else 'MISSED'})"
            )

            catalog = Catalog(f"sqlite:///{root / 'catalog.sqlite'}")
            catalog.save_ingested([fake_image(k) for k in range(args.tasks)], [], [])  # readings reference images
            t_export = t_pull = 0.0
            pulled = 0
            for reader in ("A", "B"):  # one project per reader, one annotation per task
                project = client.ensure_project(f"bench reader {reader}", config)
                raw_import(server, project, tasks(args.tasks, with_annotations=True))
                t_export += raw_export(server, project)
                elapsed, n = pull_path(client, catalog, project)
                t_pull += elapsed
                pulled += n
            ratio = t_pull / t_export
            print(
                f"pull {pulled} annotations: raw export {t_export:.1f} s, ours {t_pull:.1f} s, "
                f"ratio {ratio:.2f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'MISSED'})"
            )


def fake_image(k: int) -> ImageRecord:
    return ImageRecord(
        image_id=f"{k:064x}",
        organ=ORGAN,
        source="bench",
        source_ref=str(k),
        patient_key=str(k),
        width=SIZE[0],
        height=SIZE[1],
        phash="0" * 16,
        split="train",
    )


if __name__ == "__main__":
    main()
