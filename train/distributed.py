"""Data-parallel training on several workers (GPUs of one node, or a Ray cluster).

Ray Train's ``TorchTrainer`` starts ``workers`` processes and sets up the torch
process group (NCCL on GPUs, gloo on CPUs); each worker runs the same loop as a
single-process run (:func:`nsa.train.trainer.run_worker`) with its rank, reads its own
share of the chunks (see :mod:`nsa.train.data`) and takes ``batch_size / workers``
examples per step, so the global batch and the learning-rate schedule do not depend on
the number of workers. Rank 0 writes the run directory, which therefore has to be on a
file system every node sees (it is, on one node), and sends its progress to the command,
which draws it (:mod:`nsa.progress_relay`).

Ray Train wants a storage folder of its own; it gets ``RUN/ray`` (on the file system the
workers share, like the run). Nothing there is ours or needed to resume (Ray writes a
storage marker; the workers report no checkpoints to Ray, ours are the run's own files,
which ``--resume`` reads), so the folder is removed when training ends, finished or
failed: a run directory holds only the run's outputs.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from nsa.train.trainer import TrainConfig, run_worker

from nsa.errors import UserError
from nsa.progress_relay import relayed_progress

#: Ray Train's storage folder in the run directory, there only while training runs.
RAY_STORAGE = "ray"


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    device = ray.train.torch.get_device() if loop_config["use_gpu"] else torch.device("cpu")
    run_worker(
        TrainConfig(**loop_config["config"]), Path(loop_config["run_dir"]),
        rank=context.get_world_rank(), world=context.get_world_size(), device=device,
        progress_queue=loop_config["progress_queue"],
    )


def _first_user_error(exc: Exception) -> UserError | None:
    """The UserError a worker raised, unwrapped from Ray's error types, if any."""
    for failure in getattr(exc, "worker_failures", {}).values():
        cause = getattr(failure, "cause", None) or failure
        if isinstance(cause, UserError):
            return cause
    return None


def train_with_ray(config: TrainConfig, run_dir: Path, device: torch.device) -> None:
    """Run the training loop on ``config.workers`` Ray Train workers (DDP)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    from nsa.ray_session import ray_session

    use_gpu = device.type == "cuda"
    run_dir = run_dir.resolve()
    storage = run_dir / RAY_STORAGE
    with ray_session(config.address, None), \
            relayed_progress("examples", config.progress) as relay:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"config": asdict(config), "run_dir": str(run_dir),
                               "use_gpu": use_gpu,
                               "progress_queue": relay.queue if relay else None},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=use_gpu),
            run_config=RunConfig(
                name="ray-train", storage_path=str(storage),
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        try:
            trainer.fit()
        except TrainingFailedError as exc:
            user_error = _first_user_error(exc)
            if user_error is not None:
                raise type(user_error)(str(user_error).splitlines()[0]) from None
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(storage)
