"""Training the NSA model on shard stores: the loop, its state, and the run directory.

``train(TrainConfig(...))`` is what ``nsa-train`` calls. The loop is written once and run
either in this process or, with ``workers > 1``, in each Ray Train worker under DDP
(see :mod:`nsa.train.distributed`). Resuming is exact on the CPU because everything the
next step depends on is either in the checkpoint (model, Adam, scheduler, step, epoch,
position in the epoch) or a pure function of the seed (the data order and augmentation,
see :mod:`nsa.train.data`); the model's initial weights come from a forked RNG seeded
with the run's seed, so no global random state is read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from nsa.generate.shards import StoreError
from nsa.train import checkpoint as ckpt
from nsa.train.augment import apply_augment
from nsa.train.data import (
    PREFETCH,
    SHARED_MEMORY,
    BatchLoader,
    ShardStream,
    StoreInfo,
    make_loader,
    open_training_stores,
    shared_memory_fits,
)
from nsa.train.devices import resolve_device
from nsa.train.model import DEFAULT_FINAL_LAYER, FINAL_LAYERS, FinalLayer, NSAModel
from nsa.train.plots import plot_loss, plot_predictions
from torch import nn

import nsa
from nsa.errors import CheckFailed, OutputError, UserError, writing
from nsa.locations import is_url
from nsa.progress import progress_bar
from nsa.progress_relay import ProgressSender
from nsa.versions import package_versions

LOSS_PNG = "loss.png"
PREDICTIONS_PNG = "predictions.png"


@dataclass
class TrainConfig:
    """Every setting of a run; field names are the ``nsa-train`` option names."""

    shards: list[str] = field(default_factory=list)
    out: str | None = None
    resume: str | None = None
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-6
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    loader_workers: int = 2
    shuffle_chunks: int = 8
    checkpoint_every: int = 200
    log_every: int = 10
    predictions: int = 4
    workers: int = 1
    address: str | None = None
    overwrite: bool = False
    progress: bool = True
    #: The decoder's last x2 layer: ``resize-conv`` or ``transposed`` (the release's; see
    #: :func:`nsa.train.model.make_final_layer`). Runs recorded without it are resize-conv.
    final_layer: FinalLayer = DEFAULT_FINAL_LAYER
    #: Loader streams per worker, chosen at the start (``loader_workers`` or fewer when
    #: the stores are too small to feed that many); recorded so that a resume reads the
    #: same. Not an option.
    loader_streams: int | None = None


#: Settings that may differ when resuming: they change where and how fast, not what.
RESUME_OVERRIDES = ("resume", "device", "threads", "address", "progress")
#: Settings that only make sense for a new run.
NEW_RUN_ONLY = ("out", "overwrite")
#: Old name -> name of settings renamed since (a run's config.json may hold the old one).
RENAMED = {"num_workers": "workers"}


def available_cores() -> int:
    return len(os.sched_getaffinity(0))


def check_config(config: TrainConfig) -> None:
    """Refuse option values that cannot make a run, naming the option."""
    if config.final_layer not in FINAL_LAYERS:
        raise UserError(f"--final-layer: {config.final_layer!r} is not a final layer "
                        f"(choose {' or '.join(FINAL_LAYERS)})")
    if (config.epochs is None) == (config.steps is None):
        raise UserError("give exactly one of --epochs or --steps")
    for name in ("epochs", "steps"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1, not {value}")
    positive = ("batch_size", "lr", "checkpoint_every", "log_every", "shuffle_chunks",
                "workers")
    for name in positive:
        if getattr(config, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive")
    for name in ("lr", "min_lr"):
        if not math.isfinite(getattr(config, name)):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number")
    if config.min_lr < 0 or config.min_lr > config.lr:
        raise UserError("--min-lr must lie between 0 and --lr")
    if config.loader_workers < 0:
        raise UserError("--loader-workers must be 0 or more")
    if config.threads is not None and config.threads < 1:
        raise UserError("--threads must be at least 1")
    if config.batch_size % config.workers:
        raise UserError(
            f"--batch-size {config.batch_size} must be divisible by --workers "
            f"{config.workers} (it is the global batch, split across workers)"
        )


def make_dataset(
    config: TrainConfig, stores: list[StoreInfo], rank: int, world: int, device: torch.device,
    streams: int | None = None,
) -> ShardStream:
    """The rank's batches: ``streams`` (default: the run's chosen ``loader_streams``) per
    rank, read by as many loader processes, or in this process with ``--loader-workers 0``."""
    streams = streams or config.loader_streams or max(1, config.loader_workers)
    return ShardStream(
        stores, seed=config.seed, batch_size=config.batch_size // world,
        shuffle_chunks=config.shuffle_chunks, loader_workers=streams,
        processes=streams if config.loader_workers else 0,
        rank=rank, world_size=world, augment_in_loader=device.type != "cuda",
    )


def choose_streams(config: TrainConfig, stores: list[StoreInfo], device: torch.device) -> int:
    """The most loader streams per worker, up to ``--loader-workers``, of which each can
    make at least one batch in the first epoch; says so in one line when that is fewer.

    Raises StoreError when even one stream per worker cannot make one batch.
    """
    asked = max(1, config.loader_workers)
    world = config.workers
    for streams in range(asked, 0, -1):
        dataset = make_dataset(config, stores, 0, world, device, streams)
        if dataset.steps_in_epoch(0) > 0:
            break
    else:
        shares = f" on each of {world} workers" if world > 1 else ""
        raise StoreError(
            f"the stores hold {sum(s.n for s in stores)} examples: too few for one batch "
            f"of {config.batch_size // world}{shares} (lower --batch-size)"
        )
    if streams < asked:
        print(f"note: the stores hold {sum(s.n for s in stores)} examples, too few for "
              f"batches of {config.batch_size // world} in {asked} loader streams; "
              f"reading them in {streams}", file=sys.stderr)
    return streams


def total_steps(config: TrainConfig, dataset: ShardStream) -> int:
    """Steps of the whole run: ``--steps``, or the sum of the epochs' batch counts."""
    if config.steps is not None:
        return config.steps
    return sum(dataset.steps_in_epoch(epoch) for epoch in range(config.epochs))


def prepare_run_dir(out: str | None, overwrite: bool) -> Path:
    """Create (or, with ``overwrite``, empty) the run directory and prove it is writable."""
    if not out:
        raise UserError("give --out RUN (a new run directory) or --resume RUN")
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir}: exists and is not a directory")
    if (run_dir / ckpt.CONFIG_FILE).exists():
        if not overwrite:
            raise UserError(
                f"--out {run_dir}: already holds a run; continue it with --resume {run_dir} "
                "or pass --overwrite"
            )
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {run_dir}: cannot write there ({exc.strerror})") from None
    return run_dir


def train(config: TrainConfig, given: Collection[str] | None = None) -> Path:
    """Train (or, with ``config.resume``, continue) a run; return its directory.

    ``given`` names the options the user gave (the CLI knows); a resume refuses any of
    them that would change what the run computes. ``None``: the fields of ``config``
    that differ from their defaults.
    """
    if config.resume:
        run_dir, config = resume_config(config, given)
        step = finished_step(run_dir)
        if step is not None:
            print(f"note: {run_dir}: the run is finished (step {step} of {step}); nothing "
                  "to resume", file=sys.stderr)
            return run_dir
    check_config(config)
    device = resolve_device(config.device)
    stores = open_training_stores(config.shards)
    if config.resume:
        check_stores_unchanged(run_dir, stores)
    else:
        config = replace(config, shards=[store.path for store in stores],
                         loader_streams=choose_streams(config, stores, device))
    dataset = make_dataset(config, stores, 0, config.workers, device)
    if not config.resume:
        run_dir = prepare_run_dir(config.out, config.overwrite)
        with writing(run_dir / ckpt.CONFIG_FILE):
            ckpt.write_json(run_record(config, stores, dataset), run_dir / ckpt.CONFIG_FILE)
    ckpt.remove_stale_temporaries(run_dir)
    if config.workers > 1:
        from nsa.train.distributed import train_with_ray

        train_with_ray(config, run_dir, device)
    else:
        run_worker(config, run_dir, rank=0, world=1, device=device)
    model, _ = ckpt.load_model(run_dir)
    with writing(run_dir / LOSS_PNG):
        plot_loss(run_dir / ckpt.METRICS_FILE, run_dir / LOSS_PNG)
    with writing(run_dir / PREDICTIONS_PNG):
        plot_predictions(model, stores[0], run_dir / PREDICTIONS_PNG, config.predictions)
    return run_dir


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def resume_config(config: TrainConfig, given: Collection[str] | None) -> tuple[Path, TrainConfig]:
    """The run directory and the recorded config of ``config.resume``, with the
    where-and-how-fast settings (``RESUME_OVERRIDES``) taken from ``config``.

    Raises UserError naming the option when one in ``given`` differs from the recorded
    run (it cannot change without making another run), and when there is no checkpoint
    of an unfinished run (:func:`finished_step`).
    """
    run_dir = Path(config.resume)
    record = ckpt.read_config(run_dir)
    ckpt.final_layer_of(run_dir, record)  # UserError naming config.json for an unknown one
    saved = record["config"]
    saved = {RENAMED.get(key, key): value for key, value in saved.items()}
    known = {f.name for f in fields(TrainConfig)}
    recorded = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    if given is None:
        defaults = TrainConfig()
        given = [f.name for f in fields(TrainConfig)
                 if getattr(config, f.name) != getattr(defaults, f.name)]
    for name in given:
        if name in RESUME_OVERRIDES:
            continue
        if name in NEW_RUN_ONLY:
            raise UserError(f"{_option(name)} cannot go with --resume, which continues "
                            f"{run_dir} in place")
        value, before = getattr(config, name), getattr(recorded, name)
        if name == "shards":
            value = [p if is_url(p) else str(Path(p).resolve()) for p in value]
        if value != before:
            shown = " ".join(value) if name == "shards" else value
            was = " ".join(before) if name == "shards" else before
            raise UserError(
                f"{_option(name)} {shown}: {run_dir} was started with {_option(name)} {was} "
                "and --resume continues it as it was (start a new run with --out to change it)"
            )
    config = replace(recorded, **{name: getattr(config, name) for name in RESUME_OVERRIDES})
    if not (run_dir / ckpt.CHECKPOINT_FILE).exists() and finished_step(run_dir) is None:
        raise UserError(f"--resume {run_dir}: no checkpoint to continue from (it stopped "
                        "before its first); start it anew with its command and --overwrite")
    return run_dir, config


def finished_step(run_dir: Path) -> int | None:
    """The run's last step when it is finished: its model.pt was saved at the
    ``total_steps`` of its config.json. None while it is not (no model.pt, or one that
    is unreadable or of another step: resuming from the checkpoint writes it anew)."""
    path = run_dir / ckpt.MODEL_FILE
    if not path.is_file():
        return None
    try:
        state = ckpt.load_state(path)
    except UserError:
        return None
    step = state.get("step") if isinstance(state, dict) else None
    total = ckpt.read_config(run_dir).get("total_steps")
    return step if isinstance(step, int) and step == total else None


def check_stores_unchanged(run_dir: Path, stores: list[StoreInfo]) -> None:
    """Refuse to resume on stores whose content differs from the ones the run started
    with (compared by fingerprint: settings, seed, source and every chunk's checksum)."""
    recorded = ckpt.read_config(run_dir)["stores"]
    for before, store in zip(recorded, stores, strict=True):
        now = store.record()
        if "fingerprint" in before:
            same = before["fingerprint"] == now["fingerprint"]
        else:  # a run recorded before fingerprints
            same = all(before.get(key) == now[key] for key in now if key != "fingerprint")
        if not same:
            raise StoreError(
                f"{store.path}: not the store the run {run_dir} started with (its examples "
                "or settings changed since: regenerated?); resuming would mix two datasets"
            )


def run_record(config: TrainConfig, stores: list[StoreInfo], dataset: ShardStream) -> dict:
    """config.json: what was asked, what was used, and enough to rebuild the model."""
    first = stores[0]
    out_h, out_w = first.augment.output_size
    return {
        "config": asdict(config),
        "stores": [store.record() for store in stores],
        "settings": first.settings,
        "channels": first.channels,
        "height": first.height,
        "width": first.width,
        "input_height": out_h,
        "input_width": out_w,
        "total_steps": total_steps(config, dataset),
        "steps_per_epoch": [dataset.steps_in_epoch(e) for e in range(config.epochs or 1)],
        "loader_streams": config.loader_streams,
        "nsa_version": nsa.__version__,
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_model(channels: int, seed: int, final_layer: str = DEFAULT_FINAL_LAYER) -> NSAModel:
    """The model with initial weights drawn from ``seed`` alone (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NSAModel(channels, final_layer)


class Run:
    """The state of one worker's training loop and the steps that change it."""

    def __init__(self, config: TrainConfig, run_dir: Path, rank: int, world: int,
                 device: torch.device, progress_queue: Any = None) -> None:
        self.config, self.run_dir, self.rank, self.device = config, run_dir, rank, device
        self.main = rank == 0
        #: Where rank 0 sends its progress for the command to draw (a Ray Train worker's
        #: own output reaches nobody), or None to draw it here.
        self.progress_queue = progress_queue
        self.world = world
        self.cuda = device.type == "cuda"
        stores = open_training_stores(config.shards)
        self.channels = stores[0].channels
        self.out_size = stores[0].augment.output_size
        self.dataset = make_dataset(config, stores, rank, world, device)
        self._share_batches_safely()
        self.total = total_steps(config, self.dataset)
        self.model = build_model(self.channels, config.seed, config.final_layer).to(device)
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.total, eta_min=config.min_lr
        )
        self.step = self.epoch = self.position = 0
        self.saved_step: int | None = None  # step of the checkpoint on disk, if any
        if config.resume:
            self._restore()
        self.net: nn.Module = self.model
        if world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if self.cuda else None
            )
        self.loss_fn = nn.BCEWithLogitsLoss()

    def _share_batches_safely(self) -> None:
        """Send batches through a pipe when /dev/shm is too small for the loader's."""
        held = self.dataset.batch_bytes() * (PREFETCH * self.dataset.loader_processes + 2)
        if shared_memory_fits(self.dataset, factor=self.world):
            return
        self.dataset.through_pipe = True
        if self.main:
            print(f"note: {SHARED_MEMORY} has too little room for the loader processes' "
                  f"batches ({held * self.world / 2**20:.0f} MiB at once); they come "
                  "through a pipe instead (same batches, slower; a container's --shm-size "
                  "raises it)", file=sys.stderr)

    def _restore(self) -> None:
        path = self.run_dir / ckpt.CHECKPOINT_FILE
        state = ckpt.load_state(path)
        ckpt.load_weights(self.model, state, path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.epoch, self.position = (
                state["step"], state["epoch"], state["position"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: not a checkpoint of this run ({exc})") from None
        self.saved_step = self.step
        if self.main:
            self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop metric lines after the checkpoint (those steps are about to be redone)
        and a torn last line."""
        path = self.run_dir / ckpt.METRICS_FILE
        if path.exists():
            kept = [row for row in ckpt.read_metrics(path) if row["step"] <= self.step]
            with writing(path):
                ckpt.write_atomic(path, lambda tmp: tmp.write_text(
                    "".join(json.dumps(row) + "\n" for row in kept)))

    def _check_weights(self) -> None:
        """CheckFailed when a weight is not finite (never saved)."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise CheckFailed(f"training diverged: the weights are not finite after step "
                              f"{self.step} (start anew with a lower --lr)")

    def _check_losses(self, losses: list[torch.Tensor]) -> None:
        """CheckFailed naming the first step whose loss is not finite, among ``losses``
        (those of the last ``len(losses)`` steps; one device sync). Under DDP the ranks
        agree, so that all of them stop together."""
        values = torch.stack(losses)
        bad = ~torch.isfinite(values)
        flag = bad.any().to(torch.int32)
        if self.world > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if not int(flag):
            return
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            step = self.step - len(losses) + first + 1
            where = f"the loss is {float(values[first])} at step {step}"
        else:
            where = f"another worker's loss is not finite by step {self.step}"
        raise CheckFailed(f"training diverged: {where} (start anew with a lower --lr)")

    def save_checkpoint(self) -> None:
        if not self.main:
            return
        self._check_weights()
        path = self.run_dir / ckpt.CHECKPOINT_FILE
        with writing(path):
            ckpt.save_torch({
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step,
                "epoch": self.epoch, "position": self.position, "total_steps": self.total,
            }, path)
        self.saved_step = self.step

    def save_model(self) -> None:
        if self.main:
            self._check_weights()
            state = {k: v.cpu() for k, v in self.model.state_dict().items()}
            path = self.run_dir / ckpt.MODEL_FILE
            with writing(path):
                ckpt.save_torch({"model": state, "step": self.step}, path)

    def _checkpoint_kept(self) -> bool:
        """Whether this run's checkpoint of ``saved_step`` is on disk."""
        return self.saved_step is not None and (self.run_dir / ckpt.CHECKPOINT_FILE).exists()

    def _stopped(self) -> str:
        """What a failed run leaves, for the end of its one-line error."""
        if self._checkpoint_kept():
            kept = f"the checkpoint of step {self.saved_step} is kept"
        else:
            kept = "no checkpoint was written"
        return f"training stopped at step {self.step} ({kept})"

    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        stacked = batch["stacked"].to(self.device, non_blocking=True)
        if "params" in batch:  # augmentation left for the device
            stacked = apply_augment(stacked, batch["params"], self.out_size)
        stacked = stacked.float().div_(255.0)
        images, labels = stacked[:, : self.channels], stacked[:, self.channels:]
        if self.cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            logits = self.net(images)
        loss = self.loss_fn(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def batches(self):
        """Yield batches from the saved position on, epoch after epoch, until the end
        (one loader, whose processes serve every epoch and end with this generator)."""
        loader = make_loader(self.dataset, pin_memory=self.cuda)
        try:
            yield from self._epochs(loader)
        finally:
            loader.close()

    def _epochs(self, loader: BatchLoader):
        while self.step < self.total:
            in_epoch = self.dataset.steps_in_epoch(self.epoch)
            if self.position >= in_epoch:
                self.epoch, self.position = self.epoch + 1, 0
                continue
            self.dataset.set_epoch(self.epoch, self.position)
            for batch in loader:
                if "error" in batch:
                    raise batch["error"]
                yield batch
                if self.step >= self.total:
                    return
            if self.position < in_epoch:  # a batch never arrived: never train on less
                raise OutputError(
                    f"the data loader lost batches of epoch {self.epoch} (a loader process "
                    f"could not hand them over; is {SHARED_MEMORY} full?)"
                )
            self.epoch, self.position = self.epoch + 1, 0

    def fit(self) -> None:
        """Train to the end; UserError (one line, saying where it stopped) on a damaged
        chunk, a full disk or a diverged loss, keeping the last good checkpoint."""
        try:
            self._fit()
        except UserError as exc:
            raise type(exc)(f"{exc}; {self._stopped()}") from exc
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: say what --resume will find
            if self.main:
                print(f"note: {self.run_dir}: {self._resumable()}", file=sys.stderr)
            raise

    def _resumable(self) -> str:
        """Where an interrupted run stopped and what ``--resume`` continues from."""
        stopped = self._stopped()
        if self._checkpoint_kept():
            return f"{stopped}; --resume {self.run_dir} continues from there"
        return (f"{stopped}; checkpoints come every {self.config.checkpoint_every} steps "
                "(--checkpoint-every), so this run cannot be resumed: start it anew with "
                "its command and --overwrite")

    def _fit(self) -> None:
        config = self.config
        self.model.train()
        examples_per_step = config.batch_size
        bar: Any = None
        if self.main and config.progress:
            bar = (progress_bar("examples") if self.progress_queue is None
                   else ProgressSender(self.progress_queue))
        task = None
        if bar is not None:
            bar.start()
            task = bar.add_task("training", total=self.total * examples_per_step,
                                completed=self.step * examples_per_step)
        loss_sum, since, tick = torch.zeros((), device=self.device), 0, time.perf_counter()
        # Losses not yet checked for being finite: every step on the CPU (free), at log
        # and checkpoint steps on a GPU (one sync there, which logging costs anyway).
        unchecked: list[torch.Tensor] = []
        metrics = self.run_dir / ckpt.METRICS_FILE
        try:
            for batch in self.batches():
                loss = self.train_step(batch)
                unchecked.append(loss)
                loss_sum += loss
                self.step += 1
                self.position += 1
                since += 1
                log = self.step % config.log_every == 0 or self.step == self.total
                save = self.step % config.checkpoint_every == 0 or self.step == self.total
                if log or save or not self.cuda:
                    self._check_losses(unchecked)
                    unchecked.clear()
                if log:
                    now = time.perf_counter()
                    mean = float(loss_sum) / since
                    row = {"step": self.step, "epoch": self.epoch, "loss": mean,
                           "lr": self.scheduler.get_last_lr()[0],
                           "examples_per_s": since * examples_per_step / (now - tick)}
                    if self.main:
                        with writing(metrics):
                            ckpt.append_line(metrics, json.dumps(row) + "\n")
                    if bar is not None:
                        bar.update(task, description=f"training loss {mean:.4f}")
                    loss_sum.zero_()
                    since, tick = 0, now
                if bar is not None:
                    bar.update(task, completed=self.step * examples_per_step)
                if save:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.stop()
        self.save_model()


def run_worker(config: TrainConfig, run_dir: Path, rank: int, world: int,
               device: torch.device, progress_queue: Any = None) -> None:
    """The training loop of one worker (the only one when ``world == 1``); rank 0 sends
    its progress to ``progress_queue`` when given (see :mod:`nsa.progress_relay`)."""
    torch.set_num_threads(config.threads or max(1, available_cores() // world))
    Run(config, run_dir, rank, world, device, progress_queue).fit()
