"""Debian's Chromium, headless, with its DevTools port on 127.0.0.1: the
browser the agent's browser tests drive, and the one the end-to-end tests
open pages in."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import requests


def chromium_args(port: int, profile: Path) -> list[str]:
    """Debian's Chromium, headless, its DevTools on 127.0.0.1:port."""
    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is missing: scripts/setup.sh installs it"
    return [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", f"--remote-debugging-port={port}",
            "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}", "about:blank"]


def wait_devtools(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/json/version", timeout=1)
            return
        except requests.RequestException:
            assert time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)


@contextmanager
def headless_chromium(profile: Path):
    """Yields "127.0.0.1:PORT" once DevTools answers; kills it after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen(chromium_args(port, profile), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_devtools(port)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(p.pid, 9)
        p.wait(10)
