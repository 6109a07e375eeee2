"""--workers 2: Ray Train runs the same loop on two DDP workers (gloo on the CPU), with
the run's model (here the non-default ``--final-layer transposed``)."""

from __future__ import annotations

import json

import pytest
from nsa.train.checkpoint import load_model
from nsa.train.trainer import TrainConfig, train

pytest.importorskip("nsa.ray_session", reason="nsa.ray_session (nsa-gen, issue 8) not there yet")


def test_two_ray_train_workers_train_one_model(tmp_path, make_store, capfd):
    """... and rank 0's progress reaches this process's stderr (a log here: plain lines),
    although Ray passes none of its workers' output on; the run folder holds only the
    run's files (Ray Train's storage folder, RUN/ray, is gone)."""
    store = make_store(tmp_path / "s.zarr", n=64, chunk_size=8)
    run = train(TrainConfig(shards=[str(store)], out=str(tmp_path / "run"), steps=4,
                            batch_size=8, workers=2, loader_workers=0, progress=True,
                            log_every=1, final_layer="transposed"))
    lines = [line for line in capfd.readouterr().err.splitlines()
             if line.startswith("training")]
    assert lines and lines[-1].startswith("training loss ")
    assert ": 32/32 examples (100.0%)" in lines[-1] and "ETA 0:00:00" in lines[-1]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    model, config = load_model(run)
    assert config["config"]["workers"] == 2
    assert config["config"]["final_layer"] == "transposed"
    assert model.decoder[-1].weight.shape == (16, 1, 7, 7)  # what the workers trained
    assert not model.training
    assert sorted(path.name for path in run.iterdir()) == [
        "checkpoint.pt", "config.json", "loss.png", "metrics.jsonl", "model.pt",
        "predictions.png"]
