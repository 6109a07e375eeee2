"""The files of a run directory, written so that none is ever seen half-written.

A run directory holds ``config.json`` (every setting, the stores, versions),
``checkpoint.pt`` (the latest full training state: model, optimiser, scheduler, data
position; overwritten periodically), ``model.pt`` (the final weights, written once
training ends), ``metrics.jsonl`` and the PNGs. Every file is written to a temporary name
in the same directory and then renamed over the old one (``os.replace`` is atomic on one
file system), so a run killed at any moment keeps the previous complete file.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from nsa.train.model import DEFAULT_FINAL_LAYER, FINAL_LAYERS, NSAModel

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


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files that runs killed mid-write left in ``run_dir`` (those of
    :func:`write_atomic` whose process is gone); return them."""
    removed = []
    for name in (CONFIG_FILE, CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE):
        for tmp in Path(run_dir).glob(f".{name}.tmp*"):
            pid = tmp.name.rpartition(".tmp")[2]
            if pid.isdigit() and _alive(int(pid)):
                continue
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def append_line(path: Path, line: str) -> None:
    """Append ``line`` (with its newline) to ``path`` whole or not at all: when the write
    fails (no space left), the file is cut back to its old length and the OSError raised."""
    data = line.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``. A torn last line (a write cut short by a kill or a
    full disk) is dropped; an unreadable line before it is a UserError naming the line."""
    lines = Path(path).read_text().split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # no newline after it: the last write was cut
                break
            raise UserError(f"{path}: line {number} is not JSON") from None
    return rows


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically. Serialised in memory first: torch's own
    file writer turns a full disk into a RuntimeError ("unexpected pos"), a plain write
    gives the OSError (ENOSPC) that says what happened."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(Path(path), lambda tmp: tmp.write_bytes(buffer.getbuffer()))


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
    model = NSAModel(int(config["channels"]), final_layer_of(run_dir, config))
    load_weights(model, load_state(path), path)
    return model.to(device).eval(), config


def final_layer_of(run_dir: str | Path, config: dict[str, Any]) -> str:
    """The final layer the run's model was built with (its ``config.json``); runs
    recorded before the setting existed have none and are ``resize-conv``. UserError
    naming the file for a name this version does not know."""
    name = (config.get("config") or {}).get("final_layer", DEFAULT_FINAL_LAYER)
    if name not in FINAL_LAYERS:
        raise UserError(f"{Path(run_dir) / CONFIG_FILE}: final_layer {name!r} is not one this "
                        f"version builds ({', '.join(FINAL_LAYERS)})")
    return name


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Put ``state["model"]`` into ``model``; UserError naming ``path`` when the weights
    do not fit it (another channel count, another model) or are missing."""
    try:
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        detail = str(exc).strip().splitlines()
        reason = detail[1].strip() if len(detail) > 1 else (detail[0] if detail else "")
        raise UserError(
            f"{path}: its weights do not fit the model of its run ({CONFIG_FILE}: "
            f"{reason or exc.__class__.__name__})"
        ) from None
