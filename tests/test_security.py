"""Security pass over a full demo run: planted secrets and planted patient data must not come out anywhere.

One workspace, the catalog on PostgreSQL (with a password in its URL), every secret setting set to a
distinctive token. Before the demo, a folder whose file and folder names carry a patient's name and
record number, and a DICOM file with ten identifying tags, are ingested. Then the whole demo runs
(Label Studio dual reading, consensus, teacher, release, SFT, GRPO, evaluation), the OpenAI teacher
is called with the planted API key, and three commands fail on purpose (a Hub push with the planted
Hub token to an unreachable Hub, a pull with a wrong Label Studio token, a PostgreSQL URL whose
server is gone). Scanned: every file in the workspace (catalog dumps, image store, Prefect's
database with its logs and artifacts, Label Studio's database with the task data, releases with
their git history, reports), the parquet rows decoded, the Label Studio task export, and everything
the commands printed, error messages included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.catalog_content import catalog_content
from tests.dicom_factory import PHI_TAGS, ultrasound_dataset, ultrasound_region, with_regions, write
from tests.postgres import free_port
from tests.scripted_openai import ScriptedOpenAIServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRETS = {
    "LOOKCLOSER_TEACHER_API_KEY": "sk-PLANTED-teacher-key-5b1e",
    "LOOKCLOSER_PATIENT_KEY_SALT": "PLANTED-salt-9d2c",
}
HUB_TOKEN = "hf_PLANTEDhubtoken7a4f"  # set for the Hub push only: alone it is a configuration error
DB_PASSWORD = "PLANTED-db-password-3e8a"
WRONG_LS_TOKEN = "PLANTED-ls-token-0c6d"
PHI_NAME, PHI_FOLDER = "ZZDOE^JANE 19450203.png", "ZZ-MRN-445566"
HEADER_ROWS = 16
PLANTED_PHI = [*PHI_TAGS.values(), "ZZDOE", "ZZ-MRN-445566", "JANE 19450203", "ZZSMITH"]


def speckle(seed: int, shape: tuple[int, int] = (256, 320)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.gamma(2.0, 40.0, shape).clip(0, 255)).astype(np.uint8)


def plant_patient_sources(root: Path) -> tuple[Path, Path]:
    folder = root / "clinic-export"
    (folder / PHI_FOLDER).mkdir(parents=True)
    Image.fromarray(speckle(1)).save(folder / PHI_NAME)
    Image.fromarray(speckle(2)).save(folder / PHI_FOLDER / "scan.png")
    dicom = root / "dicom-export"
    frame = speckle(3, (64, 96))
    frame[:HEADER_ROWS] = 255  # the burned-in header band outside the ultrasound region
    dataset = ultrasound_dataset(frame, **PHI_TAGS, BurnedInAnnotation="YES")
    write(with_regions(dataset, ultrasound_region((0, HEADER_ROWS, 95, 63))), dicom / "phi.dcm")
    return folder, dicom


def lookcloser(env: dict[str, str], *args: str, ok: bool | None = True) -> str:
    """Run the CLI as a user would; `ok` None: any exit status."""
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli.main", *args], env=env, capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    if ok is not None:
        assert (result.returncode == 0) == ok, output[-3000:]
    return output


def decoded_parquet(path: Path) -> bytes:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    text = [str(v) for name in table.column_names if name != "images" for v in table.column(name).to_pylist()]
    return "\n".join(text).encode()


def git_history(repo: Path) -> bytes:
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--all", "-p", "--format=%H %an <%ae> %s%n%b", "--text"],
        capture_output=True,
        check=False,
    )
    tags = subprocess.run(["git", "-C", str(repo), "tag", "-n99"], capture_output=True, check=False)
    return log.stdout + tags.stdout


def haystacks(workspace: Path, extra: dict[str, bytes]) -> dict[str, bytes]:
    found = dict(extra)
    for path in workspace.rglob("*"):
        if path.is_file():
            found[str(path.relative_to(workspace))] = path.read_bytes()
            if path.suffix == ".parquet":
                found[f"{path.relative_to(workspace)} (decoded)"] = decoded_parquet(path)
        if path.is_dir() and path.name == ".git":
            found[f"{path.parent.relative_to(workspace)} (git history)"] = git_history(path.parent)
    return found


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, postgres_cluster, training_env):
    root = tmp_path_factory.mktemp("security")
    workspace = root / "ws"
    folder, dicom = plant_patient_sources(root / "sources")
    database = postgres_cluster.create_database()
    catalog_url = database.replace("lookcloser@", f"lookcloser:{DB_PASSWORD}@")  # trust auth: accepted, unused
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOKCLOSER_", "PREFECT_"))}
    env |= SECRETS | {
        "LOOKCLOSER_WORKSPACE": str(workspace),
        "LOOKCLOSER_CATALOG_URL": catalog_url,
        "LOOKCLOSER_LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    outputs: dict[str, str] = {}
    outputs["ingest folder"] = lookcloser(env, "ingest", "folder", str(folder), "--organ", "breast")
    outputs["ingest dicom"] = lookcloser(env, "ingest", "dicom", str(dicom), "--organ", "breast")
    try:
        outputs["demo"] = lookcloser(env, "demo", "--count", "24")
        from flows.catalog import Catalog
        from tests.teacher_fixtures import template_responders

        catalog = Catalog(database)
        good, _ = template_responders(catalog)
        catalog.close()
        with ScriptedOpenAIServer(good, api_key=SECRETS["LOOKCLOSER_TEACHER_API_KEY"], model="scripted") as teacher:
            teacher_env = env | {
                "LOOKCLOSER_TEACHER_BASE_URLS": teacher.base_url,
                "LOOKCLOSER_TEACHER_MODEL": "scripted",
            }
            outputs["synthesize openai"] = lookcloser(teacher_env, "synthesize", "--backend", "openai")
            served = len(teacher.log)
        hub_env = env | {"LOOKCLOSER_HUB_TOKEN": HUB_TOKEN, "LOOKCLOSER_HUB_REPO_ID": "org/us-vqa"}
        hub_env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        outputs["publish to an unreachable Hub"] = lookcloser(hub_env, "publish", "demo-us", ok=False)
        ls_env = env | {"LOOKCLOSER_LABEL_STUDIO_TOKEN": WRONG_LS_TOKEN}
        outputs["pull with a wrong token"] = lookcloser(ls_env, "pull", ok=False)
        gone = catalog_url.replace(f":{postgres_cluster.port}/", f":{free_port()}/")
        outputs["status with the database gone"] = lookcloser(
            env | {"LOOKCLOSER_CATALOG_URL": gone}, "status", ok=False
        )
        outputs["status"] = lookcloser(env, "status")
        outputs["doctor"] = lookcloser(env, "doctor", ok=None)
        from annotation.access import read_credentials
        from annotation.client import LabelStudioClient
        from flows.runtime.settings import Settings

        settings = Settings(workspace=workspace, label_studio_url=env["LOOKCLOSER_LABEL_STUDIO_URL"])
        credentials = read_credentials(settings)
        client = LabelStudioClient(env["LOOKCLOSER_LABEL_STUDIO_URL"], credentials["admin"]["token"])
        projects = client._sdk.projects.list()
        tasks = [task for project in projects for task in client.export_tasks(project.id)]
        listening = labelstudio_sockets(workspace)
    finally:
        lookcloser(env, "labelstudio", "down", ok=None)
    return {
        "workspace": workspace,
        "outputs": outputs,
        "tasks": tasks,
        "catalog": catalog_content(database),
        "credentials": credentials,
        "served": served,
        "listening": listening,
    }


def labelstudio_sockets(workspace: Path) -> list[str]:
    """Addresses the local Label Studio server listens on."""
    import psutil

    pid = int((workspace / "labelstudio" / "data" / "server.pid").read_text().split()[0])
    process = psutil.Process(pid)
    addresses = []
    for proc in [process, *process.children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                addresses.append(conn.laddr.ip)
    return addresses


def all_outputs(run: dict) -> dict[str, bytes]:
    extra = {f"output of {name}": text.encode() for name, text in run["outputs"].items()}
    extra["Label Studio task data"] = json.dumps(run["tasks"]).encode()
    extra["catalog rows"] = json.dumps(run["catalog"]).encode()
    return haystacks(run["workspace"], extra)


def test_the_run_used_what_was_planted(demo_run):
    """The scan means something only if the planted values were in play."""
    outputs = demo_run["outputs"]
    assert demo_run["served"] > 0  # the teacher accepted the planted API key
    assert "Hub" in outputs["publish to an unreachable Hub"]
    assert "rejected the token" in outputs["pull with a wrong token"]
    assert demo_run["tasks"] and demo_run["catalog"]["images"]
    assert any(name.endswith(".parquet (decoded)") for name in all_outputs(demo_run))
    assert any("git history" in name for name in all_outputs(demo_run))


def tokens_in(value: object) -> list[str]:
    """Every `token` value in the local server's credentials (admin, readers, adjudicators)."""
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "token" and isinstance(v, str)] + [
            t for v in value.values() for t in tokens_in(v)
        ]
    if isinstance(value, list):
        return [t for v in value for t in tokens_in(v)]
    return []


def test_no_secret_in_any_output(demo_run):
    planted = {**SECRETS, "Hub token": HUB_TOKEN, "database password": DB_PASSWORD}
    planted["wrong Label Studio token"] = WRONG_LS_TOKEN
    server_tokens = tokens_in(demo_run["credentials"])
    assert len(server_tokens) >= 3  # admin and both readers
    # where the server's tokens are kept by design: the credentials file (mode 600) and Label Studio's database
    keepers = ("labelstudio/credentials.json", "labelstudio/data/")
    for where, data in all_outputs(demo_run).items():
        for name, secret in planted.items():
            assert secret.encode() not in data, f"{name} found in {where}"
        if not where.startswith(keepers):
            for secret in server_tokens:
                assert secret.encode() not in data, f"a Label Studio token found in {where}"


def test_no_patient_data_or_file_name_in_any_output(demo_run):
    for where, data in all_outputs(demo_run).items():
        for planted in PLANTED_PHI:
            assert planted.encode() not in data, f"{planted!r} found in {where}"


def test_the_release_holds_no_reader_email_and_no_source_file_name(demo_run):
    workspace = demo_run["workspace"]
    emails = [r["email"] for r in demo_run["credentials"]["readers"]]
    file_names = [p.name for p in (workspace / "sources").rglob("*") if p.is_file()]
    release = {k: v for k, v in all_outputs(demo_run).items() if k.startswith("releases/")}
    assert any(k.endswith("README.md") for k in release) and file_names and emails
    for where, data in release.items():
        for value in [*emails, *file_names]:
            assert value.encode() not in data, f"{value!r} found in {where}"


def test_services_listen_on_loopback_only(demo_run):
    from flows.runtime.prefect_env import PREFECT_DEFAULTS

    assert demo_run["listening"] and set(demo_run["listening"]) <= {"127.0.0.1"}
    assert PREFECT_DEFAULTS["PREFECT_SERVER_API_HOST"] == "127.0.0.1"


# A flow run the way the CLI starts one (no PREFECT_API_URL: Prefect starts its own API server as a
# child process); the flow reads the sockets that server listens on while it is up.
PREFECT_PROBE = """
import sys
from pathlib import Path

import psutil

from flows.runtime.prefect_env import configure_prefect_environment

configure_prefect_environment(Path(sys.argv[1]))
from prefect import flow


@flow
def listening_addresses() -> list[str]:
    children = psutil.Process().children(recursive=True)
    return sorted({
        conn.laddr.ip
        for child in children
        for conn in child.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    })


print("LISTENING", ",".join(listening_addresses()))
"""


def test_prefect_api_server_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-c", PREFECT_PROBE, str(tmp_path)],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("LISTENING"))
    addresses = line.split()[1].split(",") if len(line.split()) > 1 else []
    assert addresses and set(addresses) <= {"127.0.0.1"}
