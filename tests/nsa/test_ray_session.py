"""ray_session: a private local Ray that leaves $HOME alone; fast failure for bad addresses."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsa.errors import UserError
from nsa.ray_session import _init, check_reachable, ray_session

_RUN_ONE_TASK = """
import os, ray
from nsa.ray_session import check_reachable, ray_session
with ray_session(None, 1):
    task = ray.remote(lambda: (os.getpid(), os.environ.get("RAY_enable_metrics_collection")))
    worker, metrics = ray.get(task.remote())
    print(os.getpid(), worker != os.getpid(), metrics)
"""


def test_local_session_runs_tasks_quietly_and_writes_nothing_under_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # as on a loaded machine: Ray's dashboard process, which the session does not use,
    # has not registered when ray.init stops waiting for it
    env["RAY_DASHBOARD_STARTUP_TIMEOUT_S"] = "0"
    result = subprocess.run([sys.executable, "-c", _RUN_ONE_TASK], capture_output=True,
                            text=True, timeout=300, env={**env, "HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr and "dashboard" not in result.stderr, result.stderr
    pid, in_worker, metrics = result.stdout.split()
    assert in_worker == "True"  # the task ran in a Ray worker process
    assert metrics == "0"  # Ray's processes collect no metrics that nothing reads
    assert list(home.rglob("*")) == []
    assert list(Path("/tmp").glob(f"nsa-ray-{pid}-*")) == []  # its temp dir is gone


@pytest.mark.timeout(60)  # ray.init alone would retry an unreachable address for minutes
def test_unreachable_address_fails_fast_with_one_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError, match=f"--address 127.0.0.1:{port}: no Ray cluster"), \
            ray_session(f"127.0.0.1:{port}"):
        pass


def test_malformed_address_is_named():
    with pytest.raises(UserError, match="expected host:port"), ray_session("headnode"):
        pass


@pytest.mark.timeout(60)
def test_ray_address_environment_variable_counts_as_the_address(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(UserError, match=f"RAY_ADDRESS 127.0.0.1:{port}: no Ray cluster"), \
            ray_session(None, 1):
        pass


@contextlib.contextmanager
def _server(reply: bytes | None) -> Iterator[int]:
    """A TCP server on a free local port that answers every connection with ``reply``
    (or never answers when None); yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed
                return
            held.append(conn)
            if reply is not None:
                conn.recv(1024)
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in held:
            conn.close()


@pytest.mark.timeout(30)
def test_a_service_that_is_not_ray_is_named_in_seconds(monkeypatch):
    with _server(b"HTTP/1.0 400 Bad request\r\n\r\n") as port:
        with pytest.raises(UserError, match=f"--address 127.0.0.1:{port}: not a Ray cluster "
                                            r"\(the service there does not speak gRPC\)"), \
                ray_session(f"127.0.0.1:{port}"):
            pass
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        with pytest.raises(UserError, match=f"RAY_ADDRESS 127.0.0.1:{port}: not a Ray"), \
                ray_session(None, 1):
            pass


@pytest.mark.timeout(30)
def test_a_service_that_never_answers_is_named_after_the_timeout():
    with _server(None) as port:
        start = time.monotonic()
        with pytest.raises(UserError, match=re.escape(
                "not a Ray cluster (no answer to a gRPC connection within 0.5 s)")):
            check_reachable(f"127.0.0.1:{port}", timeout=0.5)
        assert time.monotonic() - start < 5


def test_a_grpc_server_passes_the_probe():
    settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    with _server(settings_frame) as port:
        check_reachable(f"127.0.0.1:{port}")


def test_a_local_ray_that_does_not_start_in_time_is_one_line(monkeypatch):
    import ray

    def timed_out(**_: object) -> None:  # what ray.init raises when its raylet is late
        raise Exception("The current node timed out during startup. This could happen "
                        "because some of the raylet failed to startup or the GCS has "
                        "become overloaded.")

    monkeypatch.setattr(ray, "init", timed_out)  # _init alone: a session's Ray stays up
    with pytest.raises(UserError, match=r"^could not start a local Ray \(The current node "
                       r"timed out during startup\. .*overloaded\.\)$") as error:
        _init(None, "--address", 1, None)
    assert error.value.exit_code == 1  # the machine's failure, not the user's input


def test_a_bug_inside_ray_init_keeps_its_traceback(monkeypatch):
    import ray

    def broken(**_: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(ray, "init", broken)
    with pytest.raises(KeyError):
        _init(None, "--address", 1, None)
