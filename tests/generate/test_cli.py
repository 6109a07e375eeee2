"""nsa-gen on the command line: bad input, info/verify/preview, kill -9 + --resume, --address.

Bad input must give one ``error:`` line on stderr, exit 2, and leave nothing that looks like
a complete store. The kill and cluster tests run the real ``nsa-gen`` script in a
subprocess, so they start real Ray instances.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import zarr
from bench_scripts import bench_script
from nsa.generate import shards
from nsa.generate.cli import app
from nsa.generate.generation import generate_store
from nsa.generate.sources import mvtec_source
from typer.testing import CliRunner

import nsa

BIN = Path(sys.executable).parent
CATEGORY = "bottle"
SMALL = ["--size", "64", "--chunk-size", "8", "--no-progress"]


def _run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def _nothing_complete(out: Path) -> bool:
    try:
        shards.open_store(out)
    except shards.StoreError:
        return True
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def category_copy(mvtec_root, tmp_path) -> Path:
    """A private copy of the fixture tree that a test may damage."""
    root = tmp_path / "mvtec"
    shutil.copytree(mvtec_root, root)
    return root


def test_version_prints_the_package_version():
    result = _run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == nsa.__version__


def test_missing_root_is_one_line_exit_2(tmp_path):
    out = tmp_path / "s.zarr"
    result = _run("mvtec", "--root", tmp_path / "absent", "--category", CATEGORY, "--n", 8,
                  "--out", out, *SMALL)
    _assert_one_line_error(result, str(tmp_path / "absent"), "does not exist")
    assert not out.exists()


def test_wrong_category_is_one_line_exit_2(mvtec_root, tmp_path):
    out = tmp_path / "s.zarr"
    result = _run("mvtec", "--root", mvtec_root, "--category", "zipper", "--n", 8,
                  "--out", out, *SMALL)
    _assert_one_line_error(result, "'zipper'")
    assert not out.exists()


def test_empty_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "s.zarr"
    result = _run("folder", "--root", tmp_path / "empty", "--preset", "tile", "--n", 8,
                  "--out", out, *SMALL)
    _assert_one_line_error(result, str(tmp_path / "empty"), "no images")
    assert not out.exists()


def test_truncated_image_is_named_exit_2(category_copy, tmp_path):
    bad = category_copy / CATEGORY / "train" / "good" / "003.png"
    bad.write_bytes(bad.read_bytes()[:200])
    out = tmp_path / "s.zarr"
    result = _run("mvtec", "--root", category_copy, "--category", CATEGORY, "--n", 8,
                  "--out", out, *SMALL)
    _assert_one_line_error(result, str(bad), "truncated")
    assert not out.exists()


def test_list_naming_missing_images_says_how_many_and_the_first(category_copy, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("000.png\ngone_a.png\ngone_b.png\n")
    out = tmp_path / "s.zarr"
    result = _run("chestxray", "--root", category_copy / CATEGORY / "train" / "good",
                  "--list", listing, "--n", 8, "--out", out, *SMALL)
    _assert_one_line_error(result, "2 of 3", "first: gone_a.png")
    assert not out.exists()


def test_zero_examples_is_one_line_exit_2(mvtec_root, tmp_path):
    out = tmp_path / "s.zarr"
    result = _run("mvtec", "--root", mvtec_root, "--category", CATEGORY, "--n", 0,
                  "--out", out, *SMALL)
    _assert_one_line_error(result, "--n")
    assert not out.exists()


def test_existing_out_without_resume_or_overwrite_is_one_line_exit_2(mvtec_root, tmp_path):
    out = tmp_path / "s.zarr"
    out.mkdir()
    result = _run("mvtec", "--root", mvtec_root, "--category", CATEGORY, "--n", 8,
                  "--out", out, *SMALL)
    _assert_one_line_error(result, str(out), "empty folder", "--overwrite")
    assert "--resume" not in result.stderr
    assert _nothing_complete(out)


def test_unreachable_address_is_one_line_exit_2_within_seconds(mvtec_root, tmp_path):
    out = tmp_path / "s.zarr"
    address = f"127.0.0.1:{_free_port()}"
    result = _run("mvtec", "--root", mvtec_root, "--category", CATEGORY, "--n", 8,
                  "--out", out, "--address", address, *SMALL)
    _assert_one_line_error(result, f"--address {address}", "no Ray cluster reachable")
    assert not out.exists()


def test_unknown_setting_in_set_is_one_line_exit_2(mvtec_root, tmp_path):
    result = _run("mvtec", "--root", mvtec_root, "--category", CATEGORY, "--n", 8,
                  "--out", tmp_path / "s.zarr", "--set", "num_pachtes=2", *SMALL)
    _assert_one_line_error(result, "num_pachtes")


@pytest.fixture(scope="module")
def cli_store(mvtec_root, local_ray, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "s.zarr"
    result = _run("mvtec", "--root", mvtec_root, "--category", CATEGORY, "--n", 20,
                  "--out", out, "--set", "num_patches=2", *SMALL)
    assert result.exit_code == 0, result.output
    return out


def test_generation_prints_the_summary_and_records_set_overrides(cli_store):
    assert shards.open_store(cli_store).attrs["settings"]["num_patches"] == 2


def test_info_prints_the_summary(cli_store):
    result = _run("info", cli_store)
    assert result.exit_code == 0
    assert "complete:" in result.stdout and "yes" in result.stdout
    assert "preset:" in result.stdout and CATEGORY in result.stdout
    assert "kB per example" in result.stdout


def test_verify_reports_a_corrupted_chunk_by_index_with_exit_1(cli_store, tmp_path):
    damaged = tmp_path / "d.zarr"
    shutil.copytree(cli_store, damaged)
    chunk_file = damaged / "masks" / "c" / "2" / "0" / "0" / "0"
    chunk_file.write_bytes(chunk_file.read_bytes()[:-8] + bytes(8))
    assert _run("verify", cli_store, "--no-progress").exit_code == 0
    result = _run("verify", damaged, "--quiet")  # the old name of --no-progress still works
    assert result.exit_code == 1
    assert "chunk 2" in result.stderr and "chunk 1" not in result.stderr


def test_verify_counts_the_chunks_it_checked_in_words(cli_store, tmp_path):
    assert _run("verify", cli_store).stdout.endswith(
        f"{cli_store}: all {shards.open_store(cli_store).n_chunks} chunks match their "
        "checksums\n")
    one = bench_script("store_scaling").write_synthetic_store(tmp_path / "one.zarr", 10, 16)
    assert _run("verify", one).stdout.endswith(f"{one}: the chunk matches its checksum\n")


def test_preview_writes_a_png_grid(mvtec_root, tmp_path):
    out = tmp_path / "preview.png"
    result = _run("preview", "mvtec", "--root", mvtec_root, "--category", CATEGORY,
                  "--n", 2, "--size", 64, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _gen_command(root: Path, out: Path, n: int, *extra: str) -> list[str]:
    return [str(BIN / "nsa-gen"), "mvtec", "--root", str(root), "--category", CATEGORY,
            "--n", str(n), "--out", str(out), "--size", "64", "--chunk-size", "4", *extra,
            "--no-progress"]


def _reference(root: Path, out: Path, n: int) -> dict[str, np.ndarray]:
    generate_store(mvtec_source(root, CATEGORY), out, n=n, size=64, chunk_size=4,
                   workers=2, progress=False)
    group = shards.open_store(out).group
    return {name: group[name][:] for name in (*shards.EXAMPLE_ARRAYS, "checksums")}


def _assert_same_arrays(path: Path, expected: dict[str, np.ndarray]) -> None:
    group = shards.open_store(path).group
    for name, array in expected.items():
        assert np.array_equal(group[name][:], array), name


def _written(path: Path) -> int:
    try:
        return int(zarr.open_group(str(path), mode="r")["checksums"][:].any(axis=1).sum())
    except Exception:  # not created yet
        return 0


def _kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group we started (the driver and the Ray it spawned)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def test_kill_9_then_resume_equals_an_uninterrupted_run(mvtec_root, local_ray, tmp_path):
    n = 400
    out = tmp_path / "killed.zarr"
    command = _gen_command(mvtec_root, out, n, "--workers", "1")
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _written(out) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        _kill_group(driver)
        for leftover in Path("/tmp").glob(f"nsa-ray-{driver.pid}-*"):  # its Ray temp dir
            shutil.rmtree(leftover, ignore_errors=True)
    assert _written(out) < n // 4, "the run wrote all its chunks before it was killed"
    assert _nothing_complete(out)

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_arrays(out, _reference(mvtec_root, tmp_path / "whole.zarr", n))


def test_generation_through_an_existing_cluster_at_address(mvtec_root, local_ray, tmp_path):
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="nsa-rt-", dir="/tmp")  # Ray's socket paths must be short
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port),
         "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--disable-usage-stats",
         "--include-dashboard", "false", "--temp-dir", temp,
         "--ray-client-server-port", str(_free_port()),
         "--dashboard-agent-listen-port", str(_free_port())],
        env={**os.environ, "RAY_AUTH_MODE": "disabled"}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    out = tmp_path / "cluster.zarr"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, "ray start --head exited"
                time.sleep(0.5)
        run = subprocess.run(_gen_command(mvtec_root, out, 24, "--address",
                                          f"127.0.0.1:{port}"),
                             capture_output=True, text=True, timeout=300)
    finally:
        _kill_group(head, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
        _kill_group(head)
        shutil.rmtree(temp, ignore_errors=True)
    assert run.returncode == 0, run.stderr
    _assert_same_arrays(out, _reference(mvtec_root, tmp_path / "local.zarr", 24))


def test_set_augment_to_a_number_is_one_line_exit_2(mvtec_root, tmp_path):
    result = _run("mvtec", "--root", mvtec_root, "--category", CATEGORY, "--n", 8,
                  "--out", tmp_path / "s.zarr", "--set", "augment=5", *SMALL)
    _assert_one_line_error(result, "'augment' = 5")
    assert not (tmp_path / "s.zarr").exists()


def test_out_below_a_regular_file_is_one_line_exit_2(mvtec_root, tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "s.zarr"
    result = _run("mvtec", "--root", mvtec_root, "--category", CATEGORY, "--n", 8,
                  "--out", out, *SMALL)
    _assert_one_line_error(result, str(out), "is not a folder")


@pytest.mark.parametrize("command", ["info", "verify"])
def test_info_and_verify_name_a_damaged_store_in_one_line(cli_store, tmp_path, command):
    damaged = tmp_path / "d.zarr"
    shutil.copytree(cli_store, damaged)
    shutil.rmtree(damaged / "checksums")
    result = _run(command, damaged)
    assert result.exit_code == (1 if command == "verify" else 2), result.output
    assert result.stderr.strip() == (f"error: {damaged}: damaged store: "
                                     "array 'checksums' is missing")


@pytest.mark.parametrize("command", ["info", "verify"])
def test_info_and_verify_refuse_a_store_of_another_format_version_in_one_line(
        cli_store, tmp_path, command):
    old = tmp_path / "v1.zarr"
    shutil.copytree(cli_store, old)
    zarr.open_group(str(old), mode="r+").attrs["format_version"] = 1
    result = _run(command, old)
    _assert_one_line_error(result, str(old), "store format version 1", "reads version 3",
                           "regenerate")


@contextlib.contextmanager
def _http_server() -> Iterator[int]:
    """A plain HTTP/1 server on a free local port (a service that is not Ray)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_an_address_where_another_service_listens_is_one_line_within_seconds(
        mvtec_root, tmp_path, how):
    out = tmp_path / "s.zarr"
    with _http_server() as port:
        address = f"127.0.0.1:{port}"
        extra = ["--address", address] if how == "--address" else []
        env = {**os.environ, "RAY_ADDRESS": address} if how == "RAY_ADDRESS" else None
        start = time.monotonic()
        run = subprocess.run(_gen_command(mvtec_root, out, 8, *extra), capture_output=True,
                             text=True, timeout=60, env=env)
        took = time.monotonic() - start
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == (f"error: {how} {address}: not a Ray cluster (the service "
                                  "there does not speak gRPC)")
    assert took < 15
    assert not out.exists()


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _session_processes(pid: int) -> list[int]:
    """Processes whose command line names the Ray temp folder of nsa-gen ``pid``."""
    marker = f"nsa-ray-{pid}-".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def test_a_second_writer_of_a_store_is_refused_in_one_line(mvtec_root, tmp_path):
    out = tmp_path / "locked.zarr"
    command = _gen_command(mvtec_root, out, 48, "--workers", "2")
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / ".locked.zarr.lock"
        _wait_for(lambda: lock.exists() and lock.read_text().strip(), first)
        for extra in ([], ["--resume"]):
            second = subprocess.run([*command, *extra], capture_output=True, text=True,
                                    timeout=60)
            assert second.returncode == 2, second.stderr
            assert second.stderr.strip() == (f"error: {out}: another nsa-gen is writing this "
                                             f"store (pid {first.pid})")
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        _kill_group(first)
    assert shards.verify_store(out) == 12
    assert not lock.exists()


def test_sigterm_cleans_up_in_one_line_and_resume_finishes(mvtec_root, tmp_path):
    out = tmp_path / "term.zarr"
    command = _gen_command(mvtec_root, out, 200, "--workers", "1")
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _written(out) >= 1, driver)
        os.kill(driver.pid, signal.SIGTERM)
        assert driver.wait(timeout=30) == 130
        assert driver.stderr.read() == "terminated\n"  # no traceback, no Ray stack
        assert list(Path("/tmp").glob(f"nsa-ray-{driver.pid}-*")) == []
        deadline = time.monotonic() + 5
        while _session_processes(driver.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _session_processes(driver.pid) == []
    finally:
        _kill_group(driver)
    assert _nothing_complete(out) and not (tmp_path / ".term.zarr.lock").exists()
    resumed = subprocess.run([*command, "--workers", "2", "--resume"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert shards.verify_store(out) == 50


def test_a_killed_runs_ray_temp_folder_and_processes_go_when_the_next_session_starts():
    from nsa.ray_session import remove_stale_temp_dirs

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix=f"nsa-ray-{dead.pid}-", dir="/tmp"))
    live = Path(tempfile.mkdtemp(prefix=f"nsa-ray-{os.getpid()}-", dir="/tmp"))
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                               f"--like-a-raylet-of={stale}"])
    try:
        cmdline = Path(f"/proc/{orphan.pid}/cmdline")
        deadline = time.monotonic() + 10  # until exec: a busy machine may not be there yet
        while str(stale).encode() not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        remove_stale_temp_dirs()
        assert not stale.exists() and live.exists()
        assert orphan.wait(timeout=10) == -signal.SIGTERM  # that session's process ended
    finally:
        orphan.kill()
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 256 kB tmpfs (needs root; skipped otherwise), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_disk_full_is_one_line_and_the_store_resumes_elsewhere(mvtec_root, local_ray,
                                                               small_disk, tmp_path):
    out = small_disk / "full.zarr"
    args = ["mvtec", "--root", mvtec_root, "--category", CATEGORY, "--n", 120, "--size", 64,
            "--chunk-size", 4, "--workers", 2, "--no-progress"]
    result = _run(*args, "--out", out)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: {out}: no space left on device"
    assert 0 < _written(out) < 30 and _nothing_complete(out)
    moved = tmp_path / "full.zarr"
    shutil.copytree(out, moved)
    resumed = _run(*args, "--out", moved, "--resume")
    assert resumed.exit_code == 0, resumed.output
    _assert_same_arrays(moved, _reference(mvtec_root, tmp_path / "whole.zarr", 120))


def test_root_from_nsa_data_root_and_a_default_out_under_shards(
    mvtec_root, local_ray, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["mvtec", "--category", CATEGORY, "--n", "8", *SMALL],
                                env={"NSA_DATA_ROOT": str(mvtec_root)})
    assert result.exit_code == 0, result.output
    out = Path("shards") / f"{CATEGORY}-n8-s0.zarr"
    assert result.stdout.splitlines()[0] == f"writing {out} (--out not given)"
    store = shards.open_store(tmp_path / out)  # complete, or this raises
    assert store.attrs["seed"] == 0 and store.attrs["n"] == 8


def test_a_missing_root_without_nsa_data_root_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["mvtec", "--category", CATEGORY, "--n", "8"],
                                env={"NSA_DATA_ROOT": None})
    _assert_one_line_error(result, "--root", "NSA_DATA_ROOT")
    assert not (tmp_path / "shards").exists()
