"""The trainer: loss falls, the run directory is complete, resume is exact, bad input."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from nsa.generate.presets import resolve_settings
from nsa.generate.shards import StoreError
from nsa.train.checkpoint import load_model, load_state
from nsa.train.data import open_training_stores, plan_epoch
from nsa.train.model import NSAModel
from nsa.train.trainer import TrainConfig, resume_config, train

from nsa.errors import UserError

FAST = {"batch_size": 8, "loader_workers": 0, "threads": 1, "progress": False, "log_every": 1}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, make_store):
    """Two epochs over 128 examples of 32 px (32 steps) with the ELPV preset's flips:
    the demo at a tiny size."""
    root = tmp_path_factory.mktemp("finished")
    store = make_store(root / "s.zarr", n=128, chunk_size=16,
                       augment=resolve_settings("elpv")["augment"])
    return train(TrainConfig(shards=[str(store)], out=str(root / "run"), epochs=2,
                             checkpoint_every=8, **FAST))


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_over_two_epochs(finished_run):
    losses = [row["loss"] for row in _metrics(finished_run)]
    assert len(losses) == 32
    assert sum(losses[-4:]) / 4 < 0.75 * sum(losses[:4]) / 4


def test_learning_rate_follows_a_cosine_to_min_lr(finished_run):
    rows = _metrics(finished_run)
    assert rows[0]["lr"] < 1e-3 and rows[-1]["lr"] == pytest.approx(1e-6)
    assert all(a["lr"] >= b["lr"] for a, b in itertools.pairwise(rows))


def test_run_directory_records_settings_stores_and_versions(finished_run):
    config = json.loads((finished_run / "config.json").read_text())
    assert config["config"]["epochs"] == 2 and config["config"]["batch_size"] == 8
    assert config["stores"][0]["n"] == 128 and config["stores"][0]["seed"] == 0
    assert config["settings"] == resolve_settings("elpv")
    assert (config["channels"], config["height"], config["width"]) == (1, 32, 32)
    assert "torch" in config["versions"]
    assert {"step", "loss", "lr", "examples_per_s"} <= set(_metrics(finished_run)[0])


def test_run_directory_has_pictures_and_no_temporary_files(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    assert {"loss.png", "predictions.png", "model.pt", "checkpoint.pt"} <= names
    assert not [n for n in names if n.startswith(".")]


def test_load_model_gives_the_trained_model_in_eval_mode(finished_run):
    model, config = load_model(finished_run)
    assert isinstance(model, NSAModel) and not model.training
    assert config["channels"] == 1
    with torch.no_grad():
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_load_model_of_an_unfinished_run_names_it(tmp_path, finished_run):
    (tmp_path / "config.json").write_text((finished_run / "config.json").read_text())
    with pytest.raises(UserError, match="no trained model"):
        load_model(tmp_path)


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nsa.train.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, make_store):
    store = make_store(tmp_path / "s.zarr", n=64, chunk_size=8)
    steps = ["--steps", "20", "--checkpoint-every", "2", "--batch-size", "8", "--threads", "1",
             "--loader-workers", "1", "--no-progress", "--log-every", "1"]
    reference = train(TrainConfig(shards=[str(store)], out=str(tmp_path / "ref"), steps=20,
                                  checkpoint_every=2, **{**FAST, "loader_workers": 1}))
    killed = tmp_path / "killed"
    proc = _cli("--shards", str(store), "--out", str(killed), *steps)
    checkpoint = killed / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.pt").exists()
    assert 0 < load_state(checkpoint)["step"] < 20
    train(TrainConfig(resume=str(killed), threads=1, progress=False))
    expected = load_state(reference / "model.pt")["model"]
    resumed = load_state(killed / "model.pt")["model"]
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert [r["step"] for r in _metrics(killed)] == list(range(1, 21))


def test_corrupted_chunk_stops_naming_it_and_keeps_the_last_checkpoint(tmp_path, make_store):
    store = make_store(tmp_path / "s.zarr", n=64, chunk_size=8)
    plan = plan_epoch(open_training_stores([store]), 0, 0, 1, 8)
    bad = plan.streams[0][3][1]  # met at step 3 when each batch is one chunk
    (store / "masks" / "c" / str(bad) / "0" / "0" / "0").write_bytes(b"garbage")
    run = tmp_path / "run"
    with pytest.raises(StoreError, match=f"chunk {bad} .*stopped at step 3"):
        train(TrainConfig(shards=[str(store)], out=str(run), steps=6, checkpoint_every=1,
                          shuffle_chunks=1, **FAST))
    assert load_state(run / "checkpoint.pt")["step"] == 3
    assert not (run / "model.pt").exists()


def test_an_existing_run_is_not_overwritten(finished_run):
    config = json.loads((finished_run / "config.json").read_text())["config"]
    with pytest.raises(UserError, match="already holds a run"):
        train(TrainConfig(shards=config["shards"], out=str(finished_run), steps=1, **FAST))


def test_an_unwritable_out_is_refused_before_training(tiny_store, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="--out"):
        train(TrainConfig(shards=[str(tiny_store)], out=str(blocker / "run"), steps=1, **FAST))


@pytest.mark.parametrize(("options", "message"), [
    ({"steps": 2, "epochs": 2}, "exactly one of --epochs or --steps"),
    ({}, "exactly one of --epochs or --steps"),
    ({"steps": 2, "batch_size": 9, "workers": 2}, "divisible by --workers"),
    ({"steps": 2, "batch_size": 4096}, "too few"),
])
def test_bad_options_are_refused_naming_them(tiny_store, tmp_path, options, message):
    config = {**FAST, **options}
    with pytest.raises(UserError, match=message):
        train(TrainConfig(shards=[str(tiny_store)], out=str(tmp_path / "r"), **config))


def test_a_run_recorded_with_num_workers_resumes_with_those_workers(finished_run, tmp_path):
    run = tmp_path / "old-run"
    shutil.copytree(finished_run, run)
    record = json.loads((run / "config.json").read_text())
    record["config"]["num_workers"] = record["config"].pop("workers") * 2  # the old name
    (run / "config.json").write_text(json.dumps(record))
    _, config = resume_config(TrainConfig(resume=str(run)), given=[])
    assert config.workers == 2


def test_resuming_a_run_without_a_checkpoint_says_how_to_start_it_anew(finished_run, tmp_path):
    run = tmp_path / "early"
    shutil.copytree(finished_run, run)
    (run / "checkpoint.pt").unlink()  # stopped before its first checkpoint: no model
    (run / "model.pt").unlink()
    with pytest.raises(UserError, match=r"no checkpoint to continue from .*--overwrite"):
        resume_config(TrainConfig(resume=str(run)), given=[])


def test_resuming_a_finished_run_says_so_and_touches_nothing(finished_run, tmp_path, capsys):
    """... not even its stores (gone here) or its checkpoint (a finished run needs none)."""
    run = tmp_path / "done"
    shutil.copytree(finished_run, run)
    record = json.loads((run / "config.json").read_text())
    record["config"]["shards"] = [str(tmp_path / "deleted.zarr")]
    (run / "config.json").write_text(json.dumps(record))
    (run / "checkpoint.pt").unlink()
    before = {path.name: path.stat().st_mtime_ns for path in run.iterdir()}
    assert train(TrainConfig(resume=str(run), progress=False)) == run
    assert capsys.readouterr().err == (
        f"note: {run}: the run is finished (step 32 of 32); nothing to resume\n")
    assert {path.name: path.stat().st_mtime_ns for path in run.iterdir()} == before


@pytest.mark.parametrize("every", [2, 200])
def test_an_interrupted_run_says_where_it_stopped_and_whether_it_resumes(
        tmp_path, make_store, monkeypatch, capsys, every):
    """Ctrl-C (KeyboardInterrupt) at step 5: what --resume will find, in one note line."""
    from nsa.train import trainer

    store = make_store(tmp_path / "s.zarr", n=64, chunk_size=8)
    step = trainer.Run.train_step

    def interrupted_at_5(self, batch):
        if self.step == 5:
            raise KeyboardInterrupt
        return step(self, batch)

    monkeypatch.setattr(trainer.Run, "train_step", interrupted_at_5)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(shards=[str(store)], out=str(run), steps=20, checkpoint_every=every,
                          **FAST))
    note = capsys.readouterr().err.splitlines()[-1]
    if every == 2:
        assert note == (f"note: {run}: training stopped at step 5 (the checkpoint of step 4 "
                        f"is kept); --resume {run} continues from there")
        assert load_state(run / "checkpoint.pt")["step"] == 4
    else:
        assert note == (f"note: {run}: training stopped at step 5 (no checkpoint was "
                        "written); checkpoints come every 200 steps (--checkpoint-every), so "
                        "this run cannot be resumed: start it anew with its command and "
                        "--overwrite")
        assert not (run / "checkpoint.pt").exists()
