"""Screenshot what a sonographer sees: a reader project's first task in Label Studio, logged in as that reader.

    .venv/bin/python scripts/screenshot_labelstudio.py [--organ breast] [--reader R1] [--out labelstudio.png]
    .venv/bin/python scripts/screenshot_labelstudio.py --review --reader A1 --out review.png   # rationale review

Uses the workspace of `lookcloser labelstudio up` (credentials.json), Debian's chromium in headless
mode and the DevTools protocol: log in over HTTP, hand the session cookie to the browser, open the
task page, save a PNG. A check for people, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import websockets

from annotation.access import read_credentials
from annotation.client import LabelStudioClient
from annotation.label_config import label_config
from annotation.projects import project_title
from annotation.rationale_review import REVIEW_PROJECT_TITLE, review_label_config
from flows.runtime.settings import load_settings

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)


def session_cookies(url: str, email: str, password: str) -> dict[str, str]:
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/user/login/")
        response = client.post(
            "/user/login/",
            data={"email": email, "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
            headers={"Referer": f"{url}/user/login/"},
        )
        if response.status_code != 302:
            raise SystemExit(f"login as {email} failed (HTTP {response.status_code})")
        return dict(client.cookies)


async def capture(debug_port: int, url: str, cookies: dict[str, str], page_url: str, out: Path) -> None:
    targets = httpx.get(f"http://127.0.0.1:{debug_port}/json").json()
    socket_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    async with websockets.connect(socket_url, max_size=64 << 20) as browser:
        counter = 0

        async def call(method: str, **params: object) -> dict:
            nonlocal counter
            counter += 1
            await browser.send(json.dumps({"id": counter, "method": method, "params": params}))
            while True:
                message = json.loads(await browser.recv())
                if message.get("id") == counter:
                    return message.get("result", {})

        for name, value in cookies.items():
            await call("Network.setCookie", name=name, value=value, url=url)
        await call("Page.enable")
        await call("Page.navigate", url=page_url)
        await asyncio.sleep(12)  # the labeling app loads its bundle and the image
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--organ", default="breast")
    parser.add_argument("--reader", default="R1")
    parser.add_argument("--out", type=Path, default=Path("labelstudio.png"))
    parser.add_argument("--review", action="store_true", help="the rationale review project instead")
    args = parser.parse_args()
    settings = load_settings()
    credentials = read_credentials(settings)
    reader = next(r for r in credentials["readers"] if r["pseudonym"] == args.reader)
    url = str(settings.label_studio_url).rstrip("/")
    client = LabelStudioClient(url, reader["token"])
    role = "reader A" if args.reader == credentials["readers"][0]["pseudonym"] else "reader B"
    if args.review:
        project_id = client.ensure_project(REVIEW_PROJECT_TITLE, review_label_config())
    else:
        project_id = client.ensure_project(project_title(args.organ, role), label_config(args.organ))
    task_id = client.export_tasks(project_id)[0]["id"]
    page_url = f"{url}/projects/{project_id}/data?task={task_id}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        debug_port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--remote-debugging-port={debug_port}",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(3)
            asyncio.run(
                capture(debug_port, url, session_cookies(url, reader["email"], reader["password"]), page_url, args.out)
            )
        finally:
            browser.terminate()
    print(f"{page_url} -> {args.out}")


if __name__ == "__main__":
    main()
