"""Faults, interruptions and re-runs: exit 0 only when the result is right, one line
otherwise (regenerated stores, changed options, divergence, small /dev/shm, full disks,
bad inputs, leftovers, stores too small for the loader streams)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nsa.generate import shards
from nsa.train.checkpoint import append_line, load_model, load_state
from nsa.train.cli import app
from nsa.train.trainer import TrainConfig, train
from typer.testing import CliRunner

from nsa.errors import UserError

runner = CliRunner()
FAST = {"batch_size": 8, "loader_workers": 0, "threads": 1, "progress": False, "log_every": 1}
QUICK = ["--batch-size", "8", "--loader-workers", "0", "--threads", "1", "--no-progress",
         "--log-every", "1", "--predictions", "1"]


def _error_line(result) -> str:
    """The one line a failed command printed (it must be exactly one, with no traceback)."""
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stopped_template(tmp_path_factory, make_store):
    """A run of 4 steps stopped after the checkpoint of step 2 (as a kill leaves it); the
    tests that only read it share it."""
    root = tmp_path_factory.mktemp("stopped")
    store = make_store(root / "s.zarr", n=64, chunk_size=8)
    run = train(TrainConfig(shards=[str(store)], out=str(root / "run"), steps=2,
                            checkpoint_every=2, **FAST))
    config = json.loads((run / "config.json").read_text())
    config["config"]["steps"] = config["total_steps"] = 4
    (run / "config.json").write_text(json.dumps(config))
    (run / "model.pt").unlink()
    return run, store


@pytest.fixture
def stopped_run(stopped_template, tmp_path):
    """A copy of the stopped run (and of its store, at the same path) to change."""
    run, store = stopped_template
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    backup = tmp_path / "store-backup"
    shutil.copytree(store, backup)
    yield copy, store
    shutil.rmtree(store)
    shutil.move(backup, store)


# 1. Resume on another store, or with other options


def _rewrite_chunk(store: Path, index: int) -> None:
    """Put other (valid, checksummed) examples into chunk ``index``: a store regenerated
    with other images but the same settings."""
    opened = shards.open_store(store, mode="r+")
    data = opened.read_chunk(index)
    opened.write_chunk(index, shards.ChunkData(**{
        **data.__dict__, "images": (255 - data.images).astype(np.uint8)}))


@pytest.mark.parametrize("change", ["other images", "other resolution"])
def test_resume_refuses_a_store_regenerated_in_place(stopped_run, make_store, change):
    run, store = stopped_run
    if change == "other images":
        _rewrite_chunk(store, 3)
    else:
        shutil.rmtree(store)
        make_store(store, n=64, chunk_size=8, size=64)
    result = runner.invoke(app, ["--resume", str(run)])
    assert result.exit_code == 2
    assert "not the store the run" in _error_line(result)
    assert not (run / "model.pt").exists()


@pytest.mark.parametrize(("option", "value"), [
    ("--steps", "9"), ("--lr", "0.01"), ("--batch-size", "16"), ("--seed", "3"),
    ("--loader-workers", "2"), ("--out", "elsewhere"),
])
def test_resume_refuses_options_that_would_change_the_run(stopped_template, option, value):
    run, _ = stopped_template
    result = runner.invoke(app, ["--resume", str(run), option, value])
    assert result.exit_code == 2
    assert _error_line(result).startswith(f"error: {option}")


def test_resume_refuses_other_shards_and_accepts_the_same_options(stopped_run, make_store):
    run, store = stopped_run
    other = make_store(store.parent / "other.zarr", n=64, chunk_size=8, seed=5)
    result = runner.invoke(app, ["--resume", str(run), "--shards", str(other)])
    assert result.exit_code == 2 and "--shards" in _error_line(result)
    result = runner.invoke(app, ["--resume", str(run), "--shards", str(store), "--steps", "4",
                                 "--batch-size", "8", "--device", "cpu", "--threads", "1",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert _steps(run) == [1, 2, 3, 4] and (run / "model.pt").exists()


# 2. Diverged training


def test_a_diverged_loss_stops_naming_the_step_and_keeps_finite_weights(tmp_path, tiny_store):
    run = tmp_path / "run"
    result = runner.invoke(app, ["--shards", str(tiny_store), "--out", str(run), "--steps",
                                 "6", "--lr", "1e12", "--checkpoint-every", "1", *QUICK])
    assert result.exit_code == 1
    line = _error_line(result)
    assert "training diverged: the loss is nan at step 2" in line
    assert "the checkpoint of step 1 is kept" in line
    assert not (run / "model.pt").exists()
    state = load_state(run / "checkpoint.pt")
    assert state["step"] == 1
    assert all(torch.isfinite(w).all() for w in state["model"].values())


# 3. Small /dev/shm


def _in_small_shm(args: list[str], size: str) -> subprocess.CompletedProcess:
    """nsa-train in a mount namespace whose /dev/shm is a tmpfs of ``size``."""
    script = f"mount -t tmpfs -o size={size} tmpfs /dev/shm && exec \"$@\""
    command = ["unshare", "-m", "sh", "-c", script, "sh",
               sys.executable, "-m", "nsa.train.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs "
                            "/dev/shm"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a small tmpfs")
def test_a_small_dev_shm_gives_the_same_training_through_a_pipe(tmp_path, make_store):
    store = make_store(tmp_path / "s.zarr", n=64, chunk_size=16)
    options = {"steps": 2, "batch_size": 16, "loader_workers": 2, "threads": 1,
               "progress": False, "log_every": 1, "checkpoint_every": 100}
    normal = train(TrainConfig(shards=[str(store)], out=str(tmp_path / "normal"), **options))
    small = tmp_path / "small"
    args = ["--shards", str(store), "--out", str(small), "--steps", "2", "--batch-size", "16",
            "--loader-workers", "2", "--threads", "1", "--no-progress", "--log-every", "1",
            "--checkpoint-every", "100"]
    result = _in_small_shm(args, "200k")  # the loader holds 10 batches of 32 kB at once
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "through a pipe" in result.stderr
    expected = load_state(normal / "model.pt")["model"]
    got = load_state(small / "model.pt")["model"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)


# 7. Full disk


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 1 MiB at tmp_path/disk (skips where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_is_one_line_naming_the_file(small_disk, tiny_store):
    run = small_disk / "run"  # config.json fits, the checkpoint (139 MB) does not
    result = runner.invoke(app, ["--shards", str(tiny_store), "--out", str(run), "--steps",
                                 "3", "--checkpoint-every", "1", *QUICK])
    assert result.exit_code == 1
    assert _error_line(result) == (
        f"error: {run / 'checkpoint.pt'}: no space left on device; training stopped at step 1 "
        "(no checkpoint was written)")
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.jsonl"]
    assert _steps(run) == [1]


def test_a_failed_append_leaves_no_torn_line(small_disk):
    path = small_disk / "metrics.jsonl"
    append_line(path, '{"step": 1}\n')
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as handle, pytest.raises(OSError):
        while True:
            handle.write(b"\0" * 4096)
    with pytest.raises(OSError):
        append_line(path, json.dumps({"step": 2, "pad": "x" * 100_000}) + "\n")
    assert path.read_text() == '{"step": 1}\n'


def test_resume_drops_a_torn_last_metrics_line(stopped_run):
    run, _ = stopped_run
    with open(run / "metrics.jsonl", "a") as metrics:
        metrics.write('{"step": 3, "epo')
    train(TrainConfig(resume=str(run), threads=1, progress=False))
    assert _steps(run) == [1, 2, 3, 4]


# 9. Bad inputs


def test_bad_inputs_are_one_line(tmp_path, tiny_store, stopped_run):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--out", str(blocker / "run")], "--out"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["--shards", str(tiny_store), "--out", str(tmp_path / "r"),
                                     "--steps", "1", *QUICK, *extra])
        assert result.exit_code == 2 and message in _error_line(result)
    run, _ = stopped_run
    shutil.copy(run / "checkpoint.pt", run / "model.pt")
    config = json.loads((run / "config.json").read_text())
    config["channels"] = 3
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="weights do not fit the model of its run"):
        load_model(run)


# 10. Leftovers


def test_stale_temporary_files_are_removed_on_the_next_start(stopped_run):
    run, _ = stopped_run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = run / f".checkpoint.pt.tmp{dead.pid}"
    stale.write_bytes(b"\0" * 1000)
    live = run / f".model.pt.tmp{os.getppid()}"  # a process still writing
    live.write_bytes(b"\0")
    train(TrainConfig(resume=str(run), threads=1, progress=False))
    assert not stale.exists() and live.exists()


# Issue 11, kind 5: small stores


def test_a_small_store_trains_on_fewer_loader_streams(tmp_path, make_store):
    store = make_store(tmp_path / "s.zarr", n=64, chunk_size=64)
    run = tmp_path / "run"
    result = runner.invoke(app, ["--shards", str(store), "--out", str(run), "--steps", "2",
                                 "--batch-size", "16", "--threads", "1", "--no-progress",
                                 "--predictions", "1", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    assert "in 2 loader streams; reading them in 1" in result.output
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["loader_streams"] == 1 and config["config"]["loader_workers"] == 2
    result = runner.invoke(app, ["--shards", str(store), "--out", str(tmp_path / "r2"),
                                 "--steps", "2", "--batch-size", "128", *QUICK[2:]])
    assert result.exit_code == 2
    assert "too few for one batch of 128" in _error_line(result)
