"""A pipeline submitted as a Ray job to a real local head node (``ray start --head``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def _free_port() -> int:
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


def test_ray_job_submit_runs_the_pipeline_on_the_cluster(tiny_config, two_categories,
                                                        tmp_path):
    out = tmp_path / "out"
    config = tiny_config(tmp_path / "c.toml", two_categories, out, seeds=(0,))
    dashboard = _free_port()
    url = f"http://127.0.0.1:{dashboard}"
    temp = tempfile.mkdtemp(prefix="nsa-rj-", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(_free_port()),
         "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--num-gpus", "0",
         "--disable-usage-stats", "--include-dashboard", "true",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--temp-dir", temp, "--ray-client-server-port", str(_free_port()),
         "--dashboard-agent-listen-port", str(_free_port())],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_dashboard(url, head)
        job = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", url, "--",
             str(BIN / "nsa-pipeline"), "run", str(config), "--address", "auto",
             "--no-progress"],
            env=env, capture_output=True, text=True, timeout=600,
        )
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout
    assert "bottle/seed0: ran generate, train, evaluate" in job.stdout
    for category in ("bottle", "zipper"):
        metrics = json.loads((out / category / "seed0" / "eval" / "metrics.json").read_text())
        assert 0.0 <= metrics["mean"]["image_auroc"] <= 1.0
    assert (out / "summary.md").exists()
