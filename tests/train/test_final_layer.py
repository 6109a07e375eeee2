"""``--final-layer``: the release's transposed final layer as a training setting, recorded
in the run, used on resume, refused when unknown; old runs load as ``resize-conv``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from nsa.train.checkpoint import load_model, load_state
from nsa.train.cli import app
from nsa.train.model import FinalUpsample, NSAModel, make_final_layer
from nsa.train.trainer import TrainConfig, build_model, resume_config, train
from torch import nn
from typer.testing import CliRunner

from nsa.errors import UserError

runner = CliRunner()
QUICK = ["--steps", "2", "--checkpoint-every", "2", "--batch-size", "8", "--loader-workers",
         "0", "--threads", "1", "--no-progress", "--log-every", "1", "--predictions", "1"]


def test_transposed_is_the_releases_layer_and_doubles_the_side():
    layer = make_final_layer("transposed", 16)
    assert isinstance(layer, nn.ConvTranspose2d)
    assert (layer.in_channels, layer.out_channels) == (16, 1)
    assert layer.kernel_size == (7, 7) and layer.stride == (2, 2)
    assert layer.padding == (3, 3) and layer.output_padding == (1, 1)
    assert layer.bias is None
    with torch.no_grad():
        assert layer(torch.rand(1, 16, 8, 12)).shape == (1, 1, 16, 24)
        model = NSAModel(1, "transposed").eval()
        assert model(torch.rand(2, 1, 64, 32)).shape == (2, 1, 64, 32)
    assert model.decoder[-1].weight.shape == (16, 1, 7, 7)


def test_the_default_is_the_resize_convolution_with_the_same_initial_weights():
    default, named = build_model(1, 5), build_model(1, 5, "resize-conv")
    assert isinstance(default.decoder[-1], FinalUpsample)
    assert default.state_dict().keys() == named.state_dict().keys()
    assert all(torch.equal(v, named.state_dict()[k]) for k, v in default.state_dict().items())
    with pytest.raises(ValueError, match="final_layer must be one of resize-conv, transposed"):
        NSAModel(1, "deconv")


def _stop_after_two_of_four(run: Path) -> None:
    """Make ``run`` look like a 4-step run killed after its checkpoint of step 2."""
    record = json.loads((run / "config.json").read_text())
    record["config"]["steps"] = record["total_steps"] = 4
    (run / "config.json").write_text(json.dumps(record))
    (run / "model.pt").unlink()


def test_a_transposed_run_records_it_and_resumes_with_it(tmp_path, make_store):
    store = make_store(tmp_path / "s.zarr", n=32, chunk_size=8)
    run = tmp_path / "run"
    result = runner.invoke(app, ["--shards", str(store), "--out", str(run),
                                 "--final-layer", "transposed", *QUICK])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["config"]["final_layer"] == "transposed"
    _stop_after_two_of_four(run)
    refused = runner.invoke(app, ["--resume", str(run), "--final-layer", "resize-conv"])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == [
        f"error: --final-layer resize-conv: {run} was started with --final-layer transposed "
        "and --resume continues it as it was (start a new run with --out to change it)"]
    train(TrainConfig(resume=str(run), threads=1, progress=False))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert load_state(run / "model.pt")["model"]["decoder.4.weight"].shape == (16, 1, 7, 7)
    model, _ = load_model(run)
    assert isinstance(model.decoder[-1], nn.ConvTranspose2d)


def test_a_run_recorded_before_the_setting_loads_and_resumes_as_resize_conv(tmp_path,
                                                                            make_store):
    store = make_store(tmp_path / "s.zarr", n=32, chunk_size=8)
    run = train(TrainConfig(shards=[str(store)], out=str(tmp_path / "run"), steps=2,
                            checkpoint_every=2, batch_size=8, loader_workers=0, threads=1,
                            progress=False, predictions=1))
    old = Path(shutil.copytree(run, tmp_path / "old"))
    record = json.loads((old / "config.json").read_text())
    del record["config"]["final_layer"]
    (old / "config.json").write_text(json.dumps(record))
    model, _ = load_model(old)
    assert isinstance(model.decoder[-1], FinalUpsample)
    _, config = resume_config(TrainConfig(resume=str(old)), given=[])
    assert config.final_layer == "resize-conv"


def test_an_unknown_final_layer_is_one_line_and_exit_2(tmp_path, make_store):
    store = make_store(tmp_path / "s.zarr", n=16)
    result = runner.invoke(app, ["--shards", str(store), "--out", str(tmp_path / "run"),
                                 "--final-layer", "deconv", *QUICK])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --final-layer: 'deconv' is not a final layer (choose resize-conv or transposed)"]
    assert not (tmp_path / "run").exists()


def test_a_config_json_naming_an_unknown_final_layer_is_refused_naming_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"channels": 1,
                                                 "config": {"final_layer": "deconv"}}))
    (run / "model.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"config.json: final_layer 'deconv' is not one"):
        load_model(run)
    with pytest.raises(UserError, match=r"config.json: final_layer 'deconv' is not one"):
        resume_config(TrainConfig(resume=str(run)), given=[])
