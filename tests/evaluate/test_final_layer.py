"""A run trained with ``--final-layer transposed`` is rebuilt with that layer wherever a
run is loaded: prediction, evaluation and export (ONNX, TorchScript)."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from nsa.evaluate.predict import predict
from nsa.evaluate.run import evaluate
from nsa.evaluate.testsets import mvtec_testset
from nsa.train.checkpoint import load_model
from nsa.train.export import export_model
from torch import nn

from nsa.errors import UserError


def _release_layer(layer: nn.Module) -> bool:
    return (isinstance(layer, nn.ConvTranspose2d) and layer.kernel_size == (7, 7)
            and layer.stride == (2, 2) and layer.padding == (3, 3)
            and layer.output_padding == (1, 1) and layer.bias is None)


def test_a_transposed_run_predicts_and_evaluates_with_its_own_layer(
    transposed_run: Path, make_mvtec, tmp_path: Path
) -> None:
    net, config = load_model(transposed_run)
    assert config["config"]["final_layer"] == "transposed"
    assert _release_layer(net.decoder[-1])
    root = make_mvtec(tmp_path / "mvtec")
    good = root / "widget" / "test" / "good"
    predict(transposed_run, good, tmp_path / "p", progress=False)
    image = np.load(tmp_path / "p" / "maps" / "000.npy")
    assert image.shape == (64, 64) and np.isfinite(image).all()
    record = json.loads((tmp_path / "p" / "predict.json").read_text())
    assert record["model"]["final_layer"] == "transposed"
    result = evaluate([mvtec_testset(root, "widget")], transposed_run, tmp_path / "e",
                      max_pictures=0, progress=False)
    assert 0 <= result["categories"]["widget"]["image_auroc"] <= 1
    assert result["model"]["final_layer"] == "transposed"


def test_its_weights_do_not_load_into_the_default_model(transposed_run: Path,
                                                        tmp_path: Path) -> None:
    """A config.json without final_layer means resize-conv; the transposed weights then
    do not fit, and loading says so instead of leaving the final layer random."""
    run = Path(shutil.copytree(transposed_run, tmp_path / "run"))
    record = json.loads((run / "config.json").read_text())
    del record["config"]["final_layer"]
    (run / "config.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"weights do not fit .*decoder\.4\.1\.weight"):
        load_model(run)


def test_onnx_and_torchscript_exports_hold_the_transposed_layer(transposed_run: Path,
                                                                tmp_path: Path) -> None:
    run = Path(shutil.copytree(transposed_run, tmp_path / "run"))
    exported = onnx.load(str(export_model(run, "onnx")))
    meta = json.loads({p.key: p.value for p in exported.metadata_props}["nsa_pipeline"])
    assert meta["final_layer"] == "transposed"
    graph = exported.graph
    ups = [node for node in graph.node if node.op_type == "ConvTranspose"]
    assert len(ups) == 4  # three residual blocks and the final layer
    attributes = {a.name: list(a.ints) for a in ups[-1].attribute}
    assert attributes["kernel_shape"] == [7, 7] and attributes["strides"] == [2, 2]
    assert attributes["pads"] == [3, 3, 3, 3] and attributes["output_padding"] == [1, 1]
    assert len(ups[-1].input) == 2  # image and weight: no bias
    path = export_model(run, "torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        loaded = torch.jit.load(io.BytesIO(path.read_bytes()))
    net, _ = load_model(run)
    probe = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(loaded(probe), torch.sigmoid(net(probe)), atol=1e-5)
    assert loaded.net.decoder._modules["4"].weight.shape == (16, 1, 7, 7)
