"""Render a report (or any page) in headless Chromium and save a PNG: `python -m analysis.screenshot PAGE.html OUT.png`.

Used by `pidistill report --screenshot` (`make report-screenshot`) and the report tests. Chromium runs with no network of its own
(background networking off), a throw-away profile, and --no-sandbox (we are root on build machines).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1200,1800",
]


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def screenshot(page: Path, out: Path, timeout: float = 90) -> Path:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={out.resolve()}", page.resolve().as_uri()],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    if not out.exists() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {page}")
    return out


if __name__ == "__main__":
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
