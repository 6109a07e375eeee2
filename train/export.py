"""``nsa-train export RUN --format onnx|torchscript``: a model file that runs without us.

The exported graph is the run's network followed by the sigmoid, so its output *is* the
anomaly map: input ``image`` float32 (N, C, S, S) in [0, 1] (S: the side the model sees,
the centre crop for objects), output ``anomaly_map`` float32 (N, 1, S, S) in [0, 1]; the
batch is dynamic. Everything else a user needs travels inside the file as JSON
(:func:`export_metadata`): the preprocessing (resize to ``side``, RGB or grey, divide by
255, NCHW, centre crop and zero padding back), the run's settings, final layer and model
hash, and the calibration (``calibration.json``) when the run has one — export again after
calibrating. ONNX keeps it in the metadata entry ``nsa_pipeline``; TorchScript in the
extra file ``nsa_pipeline.json``.

Every export is checked before it is kept: the exported model and the torch model must
give the same maps (to :data:`TOLERANCE`) on a fixed random batch of two images, or the
export is refused.
"""

from __future__ import annotations

import io
import json
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from nsa.evaluate.backends import ONNX_METADATA_KEY, read_calibration
from nsa.evaluate.calibration import file_sha256
from nsa.evaluate.inference import Geometry
from nsa.train.checkpoint import MODEL_FILE, final_layer_of, load_model, write_atomic

from nsa.errors import UserError, cli_errors, writing
from nsa.versions import package_versions

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
TORCHSCRIPT_EXTRA = "nsa_pipeline.json"
ONNX_OPSET = 17
#: Largest |exported - torch| map difference accepted at export time.
TOLERANCE = 1e-4


class MapModule(torch.nn.Module):
    """The network then the sigmoid: (N, C, S, S) in [0, 1] -> anomaly map (N, 1, S, S)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(image))


def export_metadata(run_dir: Path, config: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The JSON record an exported file carries (see the module docstring)."""
    geometry = Geometry.from_config(config)
    model_sha256 = file_sha256(run_dir / MODEL_FILE)
    settings = config.get("settings") or {}
    channels = int(config["channels"])
    return {
        "format": fmt,
        "run": str(run_dir.resolve()),
        "model_sha256": model_sha256,
        "preset": settings.get("preset"),
        "geometry": geometry.record(),
        "channels": channels,
        "final_layer": final_layer_of(run_dir, config),
        "preprocessing": {
            "read": "RGB" if channels == 3 else "grey", "resize": "square side x side "
            "(OpenCV area when shrinking, bilinear when enlarging)",
            "side": geometry.side, "crop": geometry.crop,
            "crop_rule": "centre crop of crop x crop; the map is zero-padded back to side",
            "scale": "divide uint8 by 255", "layout": "NCHW float32",
            "output": "sigmoid applied: the anomaly map in [0, 1]",
        },
        "input": {"name": "image", "shape": ["batch", channels, geometry.crop or geometry.side,
                                             geometry.crop or geometry.side]},
        "calibration": read_calibration(run_dir, model_sha256),
        "settings": settings,
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _probe(channels: int, seen: int) -> torch.Tensor:
    """A fixed random batch of two images, to trace with and to check against."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand((2, channels, seen, seen), generator=generator)


def _onnx_bytes(module: MapModule, probe: torch.Tensor, meta: dict[str, Any]) -> bytes:
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            module, (probe,), buffer, input_names=["image"], output_names=["anomaly_map"],
            dynamic_axes={"image": {0: "batch"}, "anomaly_map": {0: "batch"}},
            opset_version=ONNX_OPSET, dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name = "nsa-pipeline"
    onnx.helper.set_model_props(model, {ONNX_METADATA_KEY: json.dumps(meta)})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _onnx_maps(data: bytes, probe: torch.Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": probe.numpy()})[0]


def _torchscript_bytes(module: MapModule, probe: torch.Tensor, meta: dict[str, Any]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        traced = torch.jit.trace(module, (probe,), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta)})
    return buffer.getvalue()


def _torchscript_maps(data: bytes, probe: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.no_grad():
        return loaded(probe).numpy()


def export_model(run_dir: str | Path, fmt: str = "onnx") -> Path:
    """Write ``RUN/model.onnx`` or ``RUN/model.torchscript.pt`` and return its path.

    Raises UserError for an unknown format, a run without a final model, or an export
    whose maps differ from the torch model's by more than :data:`TOLERANCE`.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format: {fmt!r} is not supported (choose {', '.join(FORMATS)})")
    run_dir = Path(run_dir)
    net, config = load_model(run_dir, "cpu")
    meta = export_metadata(run_dir, config, fmt)
    seen = meta["input"]["shape"][-1]
    module = MapModule(net).eval()
    probe = _probe(int(config["channels"]), seen)
    with torch.no_grad():
        expected = module(probe).numpy()
    if fmt == "onnx":
        data = _onnx_bytes(module, probe, meta)
        got = _onnx_maps(data, probe)
    else:
        data = _torchscript_bytes(module, probe, meta)
        got = _torchscript_maps(data, probe)
    difference = float(np.abs(got - expected).max())
    if not difference <= TOLERANCE:
        raise UserError(
            f"{run_dir}: the exported {fmt} model's maps differ from the torch model's by "
            f"{difference:.2e} (> {TOLERANCE:g}); not written"
        )
    path = run_dir / FORMATS[fmt]
    with writing(path):
        write_atomic(path, lambda tmp: tmp.write_bytes(data))
    return path


def export_command(
    run: Path = typer.Argument(..., help="Run directory written by nsa-train."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
) -> None:
    """Export the run's model to RUN/model.onnx (onnxruntime) or RUN/model.torchscript.pt,
    with its preprocessing and calibration inside; checked against the torch model."""
    with cli_errors():
        print(export_model(run, fmt))
