"""The files of a run directory, written so that none is ever seen half-written.

A run directory holds ``config.json`` (every setting, the stores, versions),
``checkpoint.pt`` (the latest full training state: model, optimiser, scheduler, data
position; overwritten periodically), ``model.pt`` (the final weights, written once
training ends), ``metrics.jsonl`` and the PNGs. Every file is written to a temporary name
in the same directory and then renamed over the old one (``os.replace`` is atomic on one
file system), so a run killed at any moment keeps the previous complete file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from nsa.train.model import NSAModel

from nsa.errors import UserError

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.jsonl"


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)``, flush it to disk and rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    write_atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def write_json(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's config.json; UserError naming the run when it is missing or unreadable."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir}: not a training run (no {CONFIG_FILE})") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def load_state(path: Path) -> dict[str, Any]:
    """Load a checkpoint or model file saved by this module (tensors and plain values)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[NSAModel, dict]:
    """The trained model of ``run_dir`` in eval mode on ``device``, and its config.json.

    Raises UserError when the run has no final model (training has not finished:
    resume it first) or the files are unreadable.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    path = run_dir / MODEL_FILE
    if not path.exists():
        raise UserError(
            f"{run_dir}: no trained model ({MODEL_FILE}); training did not finish, "
            f"continue it with `nsa-train --resume {run_dir}`"
        )
    state = load_state(path)
    model = NSAModel(int(config["channels"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config
