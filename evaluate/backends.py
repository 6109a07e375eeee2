"""What turns images into anomaly maps: a run directory (torch) or an exported ONNX file.

Both backends present one interface to ``nsa-eval predict`` and ``nsa-eval calibrate``:
``geometry``, ``channels`` and ``white_level`` (how images must be presented: the pixel
value deep training images were scaled by, None for 8-bit ones), ``maps(images)`` (uint8
(N, side, side, C) -> float32 (N, side, side) in [0, 1]), ``calibration`` (the stored
thresholds or None) and ``record()`` (provenance for the outputs).

An ONNX file written by ``nsa-train export`` carries everything in its metadata entry
``nsa_pipeline`` (JSON: geometry, channels, preprocessing, calibration, the run's
settings), so it runs with onnxruntime alone, without the run directory. An ONNX file
from another tool lacks that entry and is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from nsa.evaluate.calibration import CALIBRATION_FILE, file_sha256, stale_reason
from nsa.evaluate.inference import Geometry, anomaly_maps, load_run
from nsa.train.checkpoint import MODEL_FILE

from nsa.errors import UserError

#: The ONNX metadata key holding our JSON record.
ONNX_METADATA_KEY = "nsa_pipeline"
ONNX_SUFFIX = ".onnx"


class MapBackend(Protocol):
    geometry: Geometry
    channels: int
    white_level: int | None
    warnings: list[str]  # about the model itself, said once and recorded in the output
    calibration: dict[str, Any] | None

    def maps(self, images: np.ndarray) -> np.ndarray: ...

    def record(self) -> dict[str, Any]: ...


def read_calibration(run_dir: Path, model_sha256: str) -> dict[str, Any] | None:
    """The run's calibration.json, or None when it has none; UserError when it is
    unreadable or belongs to another model file."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        calibration = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    reason = stale_reason(calibration, model_sha256)
    if reason:
        raise UserError(f"{path}: {reason}")
    return calibration


@dataclass
class TorchBackend:
    """A run directory of nsa-train, on ``device``."""

    run_dir: Path
    device: str = "auto"
    calibration: dict[str, Any] | None = field(init=False)

    def __post_init__(self) -> None:
        self.run = load_run(self.run_dir, self.device)
        self.geometry, self.channels = self.run.geometry, self.run.channels
        self.white_level = self.run.white_level
        self.model_sha256 = file_sha256(Path(self.run_dir) / MODEL_FILE)
        self.calibration = read_calibration(Path(self.run_dir), self.model_sha256)
        self.warnings: list[str] = []

    def maps(self, images: np.ndarray) -> np.ndarray:
        return anomaly_maps(self.run.net, images, self.geometry, self.run.device)

    def record(self) -> dict[str, Any]:
        settings = self.run.config.get("settings") or {}
        return {"kind": "torch", "run": str(Path(self.run_dir).resolve()),
                "model_sha256": self.model_sha256, "device": str(self.run.device),
                "preset": settings.get("preset"), "geometry": self.geometry.record(),
                "channels": self.channels, "final_layer": self.run.net.final_layer}


@dataclass
class OnnxBackend:
    """An ONNX file written by ``nsa-train export``, run with onnxruntime on the CPU."""

    path: Path
    threads: int | None = None
    calibration: dict[str, Any] | None = field(init=False)

    def __post_init__(self) -> None:
        import onnxruntime

        self.meta = onnx_metadata(self.path)
        geometry = self.meta["geometry"]
        self.geometry = Geometry(side=int(geometry["side"]), crop=geometry.get("crop"))
        self.channels = int(self.meta["channels"])
        white = (self.meta.get("settings") or {}).get("white_level")
        self.white_level = int(white) if white is not None else None
        self.calibration = self.meta.get("calibration")
        self.warnings = calibration_drift(self.path, self.meta.get("run"), self.calibration)
        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def maps(self, images: np.ndarray) -> np.ndarray:
        """Same preprocessing as the torch path: /255, NCHW, centre crop, zero padding."""
        batch = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        side, crop = self.geometry.side, self.geometry.crop
        top = (side - crop) // 2 if crop else 0
        if crop:
            batch = np.ascontiguousarray(batch[:, :, top : top + crop, top : top + crop])
        (out,) = self.session.run(None, {self.input_name: batch})
        maps = out[:, 0].astype(np.float32, copy=False)
        if not crop:
            return maps
        padded = np.zeros((len(images), side, side), dtype=np.float32)
        padded[:, top : top + crop, top : top + crop] = maps
        return padded

    def record(self) -> dict[str, Any]:
        return {"kind": "onnx", "file": str(Path(self.path).resolve()),
                "file_sha256": file_sha256(self.path), "exported_from": self.meta.get("run"),
                "model_sha256": self.meta.get("model_sha256"), "device": "cpu (onnxruntime)",
                "preset": self.meta.get("preset"), "geometry": self.geometry.record(),
                "channels": self.channels}


def calibration_drift(path: Path, run_dir: str | None,
                      embedded: dict[str, Any] | None) -> list[str]:
    """A warning when the run an ONNX file was exported from (if it is still there) has
    since been calibrated anew: the file keeps the calibration it was exported with."""
    current = Path(run_dir) / CALIBRATION_FILE if run_dir else None
    if current is None or not current.is_file():
        return []
    try:
        created = json.loads(current.read_text()).get("created")
    except (OSError, ValueError):
        return []
    if embedded is not None and embedded.get("created") == created:
        return []
    kept = f"the calibration of {embedded.get('created')}" if embedded else "no calibration"
    return [f"{path} carries {kept}, but its run {run_dir} was calibrated on {created}: "
            "export it again (`nsa-train export RUN`) to use that one"]


def onnx_metadata(path: Path) -> dict[str, Any]:
    """Our metadata record of an exported ONNX file; UserError for anything else."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except Exception as exc:  # onnx raises DecodeError and others for a foreign file
        raise UserError(f"{path}: not a readable ONNX file ({exc.__class__.__name__})") from None
    entries = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY not in entries:
        producer = model.producer_name or "an unknown tool"
        raise UserError(
            f"{path}: an ONNX file from {producer}, not one written by `nsa-train export` "
            f"(no '{ONNX_METADATA_KEY}' metadata giving its input size and preprocessing)"
        )
    try:
        return json.loads(entries[ONNX_METADATA_KEY])
    except ValueError:
        raise UserError(f"{path}: its '{ONNX_METADATA_KEY}' metadata is not JSON") from None


def load_backend(model: str | Path, device: str = "auto") -> TorchBackend | OnnxBackend:
    """A run directory (torch on ``device``) or a ``.onnx`` file (onnxruntime, CPU)."""
    model = Path(model)
    if model.suffix.lower() == ONNX_SUFFIX:
        if device not in ("auto", "cpu"):
            raise UserError(f"--device {device}: an ONNX model runs on the CPU here")
        return OnnxBackend(model)
    if model.is_file():
        raise UserError(
            f"{model}: give a run directory of nsa-train or a {ONNX_SUFFIX} file from "
            "`nsa-train export`"
        )
    return TorchBackend(model, device)
