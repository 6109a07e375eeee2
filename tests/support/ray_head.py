"""A real local Ray head node (``ray start --head --block``) for the tests that submit
Ray jobs, with its dashboard (the job API) on 127.0.0.1 at a free port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

BIN = Path(sys.executable).parent
#: The ``ray`` command of the Python running the tests: a head started so runs its workers
#: (and the code under test) with this interpreter and its packages, whatever the
#: ``ray`` script's shebang names (in a helper's worktree, another checkout's venv).
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
#: Seconds the head's processes get to end after SIGTERM before SIGKILL (a test's head
#: holds nothing worth a graceful stop).
STOP_GRACE_S = 5


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_dashboard(url: str, head: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the Ray dashboard did not come up")


@contextlib.contextmanager
def ray_head(env: Mapping[str, str], cwd: Path | None = None) -> Iterator[tuple[str, Path]]:
    """Start a Ray head with 2 CPUs and no GPU, in environment ``env`` (which its
    raylet, job drivers and workers inherit) and folder ``cwd``; yield ``(dashboard URL,
    Ray's temporary folder)``. The head's process group is ended afterwards (SIGTERM,
    SIGKILL after :data:`STOP_GRACE_S`) and its temporary folder removed."""
    dashboard = free_port()
    url = f"http://127.0.0.1:{dashboard}"
    temp = Path(tempfile.mkdtemp(prefix="nsa-rj-", dir="/tmp"))  # Ray's socket paths: short
    head = subprocess.Popen(
        [*RAY, "start", "--head", "--block", "--port", str(free_port()),
         "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--num-gpus", "0",
         "--disable-usage-stats", "--include-dashboard", "true",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--temp-dir", str(temp), "--ray-client-server-port", str(free_port()),
         "--dashboard-agent-listen-port", str(free_port())],
        env=dict(env), cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_dashboard(url, head)
        yield url, temp
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # GCS, raylet: up to 15 s
            head.wait(timeout=STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever of the group is left
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)
