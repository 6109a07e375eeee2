"""The one reading of a ``--device`` option, for training and inference alike."""

from __future__ import annotations

import torch

from nsa.errors import UserError


def resolve_device(name: str) -> torch.device:
    """The torch device ``--device name`` asks for.

    ``auto`` is CUDA when present, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` (GPU
    number N) are taken as torch reads them. Raises :class:`UserError` naming the option
    for any other name, for CUDA on a machine without it and for a GPU number the machine
    does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (
            device.type == "cpu" and device.index not in (None, 0)):
        raise UserError(f"--device {name!r}: choose auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"--device {name}: this machine has {count} CUDA device(s), "
                            f"numbered 0 to {count - 1}")
    return device
