"""``nsa-train``: train the NSA model on shard stores (thin wrapper over ``trainer.train``)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from nsa.train.export import export_command
from nsa.train.trainer import TrainConfig, train

from nsa.cli_app import App
from nsa.default_command import DefaultCommandGroup
from nsa.errors import UserError, cli_errors
from nsa.locations import local_folder
from nsa.version_option import show_version

app = App(
    add_completion=False, no_args_is_help=True, cls=DefaultCommandGroup,
    help="Train the NSA model (`nsa-train --shards ... --out RUN`, the same as `nsa-train "
    "train ...`), or export a trained run (`nsa-train export RUN`).",
)
_DEFAULTS = TrainConfig()


@app.callback()
def _group(
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True,
        help="Print the version and exit."),
) -> None:
    """The program's own options (``--version``; its arguments go to ``train`` unless
    they start with a command's name, see :class:`~nsa.default_command.DefaultCommandGroup`)."""


#: Options whose --help shows TrainConfig's default; the others default to None.
_WITH_DEFAULTS = ("batch_size", "lr", "min_lr", "seed", "device", "loader_workers",
                  "shuffle_chunks", "checkpoint_every", "log_every", "predictions",
                  "final_layer", "workers", "overwrite", "progress")


def _given_here(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` came from the command line (or the environment), not from
    its default: a resume keeps the run's own value of every option not given."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@app.command("train", short_help="Train the NSA model on shard stores (nsa-gen).")
def main(
    ctx: typer.Context,
    shards: list[str] = typer.Option(
        None, "--shards",
        help="Store(s) to train on (folders or s3:// URLs): --shards A B C (or repeat --shards).",
    ),
    more_shards: list[str] = typer.Argument(None, hidden=True, metavar="[STORE]..."),
    out: str = typer.Option(
        None, callback=local_folder,
        help="New run directory (default: runs/ and the store's name without .zarr; with "
        "several stores their names joined by '+').",
    ),
    resume: str = typer.Option(
        None, callback=local_folder,
        help="Continue the run in this directory exactly where its checkpoint left it.",
    ),
    epochs: int = typer.Option(None, help="Passes over the stores (give this or --steps)."),
    steps: int = typer.Option(None, help="Optimiser steps (give this or --epochs)."),
    batch_size: int = typer.Option(
        _DEFAULTS.batch_size, help="Global batch, split across --workers.",
    ),
    lr: float = typer.Option(
        _DEFAULTS.lr, help="Adam learning rate at the start.",
    ),
    min_lr: float = typer.Option(
        _DEFAULTS.min_lr, help="Learning rate at the end (cosine schedule).",
    ),
    seed: int = typer.Option(
        _DEFAULTS.seed, help="Seed of weights, data order and augmentation.",
    ),
    device: str = typer.Option(
        _DEFAULTS.device, help="auto, cpu, cuda or cuda:N.",
    ),
    threads: int = typer.Option(None, help="CPU threads per worker (default: all cores)."),
    loader_workers: int = typer.Option(
        _DEFAULTS.loader_workers,
        help="DataLoader processes per worker (fewer when the stores cannot feed them).",
    ),
    shuffle_chunks: int = typer.Option(
        _DEFAULTS.shuffle_chunks, help="Chunks per shuffle buffer.",
    ),
    checkpoint_every: int = typer.Option(
        _DEFAULTS.checkpoint_every, help="Steps between checkpoints.",
    ),
    log_every: int = typer.Option(
        _DEFAULTS.log_every, help="Steps between metrics.jsonl lines.",
    ),
    predictions: int = typer.Option(
        _DEFAULTS.predictions, help="Training examples in predictions.png.",
    ),
    final_layer: str = typer.Option(
        _DEFAULTS.final_layer,
        help="The decoder's last x2 layer: resize-conv (bilinear x2 then a 7x7 convolution) "
        "or transposed (the authors' release: a 7x7 stride-2 transposed convolution).",
    ),
    workers: int = typer.Option(
        _DEFAULTS.workers,
        help="Ray Train workers: DDP processes, one per GPU (or CPU process); 1 trains here.",
    ),
    num_workers: int = typer.Option(None, hidden=True, help="Deprecated name of --workers."),
    address: str = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
    overwrite: bool = typer.Option(False, help="Replace a run already in --out."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Train the NSA model on pre-computed shard stores (nsa-gen); writes a run directory
    with checkpoints, config.json, metrics.jsonl, loss.png and predictions.png."""
    with cli_errors():
        stores = [str(p) for p in [*(shards or []), *(more_shards or [])]]
        if num_workers is not None:
            if _given_here(ctx, "workers"):
                raise UserError("give --workers only (--num-workers is its old name)")
            print("warning: --num-workers is deprecated; it is now called --workers",
                  file=sys.stderr)
        if out is None and resume is None and stores:
            out = default_run_dir(stores)
            print(f"note: no --out given; the run goes to {out}", file=sys.stderr)
        options = {
            "shards": stores or None, "out": str(out) if out else None,
            "resume": str(resume) if resume else None, "epochs": epochs, "steps": steps,
            "batch_size": batch_size, "lr": lr, "min_lr": min_lr, "seed": seed,
            "device": device, "threads": threads, "loader_workers": loader_workers,
            "shuffle_chunks": shuffle_chunks, "checkpoint_every": checkpoint_every,
            "log_every": log_every, "predictions": predictions, "final_layer": final_layer,
            "workers": workers,
            "address": address, "overwrite": overwrite or None, "progress": progress,
        }
        given = {name: value for name, value in options.items() if value is not None
                 and (name not in _WITH_DEFAULTS or _given_here(ctx, name))}
        if num_workers is not None:
            given["workers"] = num_workers
        run_dir = train(TrainConfig(**given), given=set(given))
        print(run_dir)


def default_run_dir(stores: list[str]) -> Path:
    """``runs/<name>`` for the stores' names without ``.zarr`` (``a.zarr`` -> ``runs/a``;
    ``a.zarr b.zarr`` -> ``runs/a+b``): what ``--out`` is when not given."""
    names = []
    for store in stores:
        name = Path(store.rstrip("/")).name
        names.append(name.removesuffix(".zarr") or name)
    return Path("runs") / "+".join(names)


app.command("export", short_help="Export a trained run to ONNX or TorchScript.")(export_command)


if __name__ == "__main__":
    app()
