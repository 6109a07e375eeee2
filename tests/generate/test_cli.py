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
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from nsa.generate import shards
from nsa.generate.cli import app
from nsa.generate.generation import generate_store
from nsa.generate.sources import mvtec_source
from typer.testing import CliRunner

import nsa

BIN = Path(sys.executable).parent
CATEGORY = "bottle"
SMALL = ["--size", "64", "--chunk-size", "8", "--quiet"]


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
    _assert_one_line_error(result, str(out), "--resume", "--overwrite")
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
    assert _run("verify", cli_store, "--quiet").exit_code == 0
    result = _run("verify", damaged, "--quiet")
    assert result.exit_code == 1
    assert "chunk 2" in result.stderr and "chunk 1" not in result.stderr


def test_preview_writes_a_png_grid(mvtec_root, tmp_path):
    out = tmp_path / "preview.png"
    result = _run("preview", "mvtec", "--root", mvtec_root, "--category", CATEGORY,
                  "--n", 2, "--size", 64, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _gen_command(root: Path, out: Path, n: int, *extra: str) -> list[str]:
    return [str(BIN / "nsa-gen"), "mvtec", "--root", str(root), "--category", CATEGORY,
            "--n", str(n), "--out", str(out), "--size", "64", "--chunk-size", "4", *extra,
            "--quiet"]


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
