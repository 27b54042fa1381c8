"""Headless Chromium for the HTML reports (Debian's chromium; `make test` installs it when
missing): run it on a page, and list the network requests a page made."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: run `make test` (it installs Debian's chromium)")
    return found


def browse(tmp: Path, url: str, *extra: str) -> str:
    """Run headless chromium on `url` with a fresh profile; its stdout (e.g. --dump-dom)."""
    profile = tmp / f"profile-{len(list(tmp.iterdir()))}"
    done = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def page_requests(netlog: Path) -> list[str]:
    """URLs the page asked the network for (not chromium's own background traffic)."""
    data = json.loads(netlog.read_text())
    start = data["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in data["events"]
        if e["type"] == start
        and str(e.get("params", {}).get("network_isolation_key", "")).startswith("file://")
    ]
