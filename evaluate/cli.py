"""``nsa-eval``: evaluate a trained run on a test set, or predict maps for new images.

Thin wrapper: one subcommand per dataset of the registry (:data:`nsa.datasets.DATASETS`),
with the dataset's own options and the shared ones defined here, builds its test sets and
calls :func:`nsa.evaluate.run.evaluate`, then prints the markdown table on stdout;
``predict`` and ``calibrate`` work on any images.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer
from nsa.datasets import DATASETS, Dataset
from nsa.evaluate.calibrate import calibrate as calibrate_run
from nsa.evaluate.calibration import DEFAULT_MAX_FPR, summary_line
from nsa.evaluate.eval_decisions import decisions_markdown
from nsa.evaluate.predict import predict as predict_images
from nsa.evaluate.run import evaluate
from nsa.evaluate.tables import markdown
from nsa.evaluate.testsets import TestSet

from nsa.cli_app import App
from nsa.errors import cli_errors
from nsa.locations import local_folder
from nsa.version_option import show_version

app = App(
    add_completion=False, no_args_is_help=True,
    help="Evaluate NSA models: image/pixel AUROC and AP, AU-PRO, tables and pictures.",
)

MODEL = typer.Option(..., "--model", callback=local_folder,
                     help="Run directory written by nsa-train.")
OUT = typer.Option(..., "--out", callback=local_folder,
                   help="Folder for metrics.json/.csv/.md, maps/, curves.png.")
PROTOCOL = typer.Option(
    "nsa", help="nsa: the paper's (side px, mean score); mvtec: native size, max score."
)
DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N.")
BATCH_SIZE = typer.Option(16, help="Images per forward pass.")
MAX_PICTURES = typer.Option(20, help="Overlay pictures per test set in maps/ (0: none).")
PROGRESS = typer.Option(True, help="Show a progress bar.")


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Evaluate NSA models: image/pixel AUROC and AP, AU-PRO, tables and pictures."""


def _run(testsets: list[TestSet], *, model: Path, out: Path, protocol: str, device: str,
         batch_size: int, max_pictures: int, progress: bool) -> None:
    result = evaluate(
        testsets, model, out, protocol=protocol, device=device, batch_size=batch_size,
        max_pictures=max_pictures, progress=progress,
    )
    print(markdown(result) + decisions_markdown(result), end="")


def _command(dataset: Dataset) -> Any:
    """The typer command of ``dataset``: its own options, then the shared ones of
    :func:`_shared`."""
    own_names = [p.name for p in dataset.eval_options]

    def command(**values: Any) -> None:
        with cli_errors():
            own = {name: values.pop(name) for name in own_names}
            _run(dataset.testsets(**own), **values)

    parameters = [*dataset.eval_options,
                  *list(inspect.signature(_shared).parameters.values())]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = dataset.summary
    return command


def _shared(
    *, model: str = MODEL, out: str = OUT, protocol: str = PROTOCOL, device: str = DEVICE,
    batch_size: int = BATCH_SIZE, max_pictures: int = MAX_PICTURES, progress: bool = PROGRESS,
) -> None:
    """The options every dataset subcommand of nsa-eval shares (its signature is used)."""


for _dataset in DATASETS.values():
    app.command(_dataset.name)(_command(_dataset))


@app.command()
def predict(
    images: Path = typer.Option(..., help="Folder of unlabelled images."),
    model: str = typer.Option(
        ..., "--model", callback=local_folder,
        help="Run directory written by nsa-train, or its exported model.onnx.",
    ),
    out: str = typer.Option(..., callback=local_folder,
                            help="Folder for maps/ (.png, .npy) and scores.csv."),
    device: str = DEVICE, batch_size: int = BATCH_SIZE, progress: bool = PROGRESS,
    threshold: float = typer.Option(
        None, help="Image threshold on score_mean in [0, 1] (default: the calibrated one)."
    ),
    pixel_threshold: float = typer.Option(
        None, help="Map value in [0, 1] above which a pixel is defective (default: calibrated)."
    ),
) -> None:
    """Anomaly maps, image scores and decisions for new, unlabelled images; report.html."""
    with cli_errors():
        print(predict_images(model, images, out, device=device, batch_size=batch_size,
                             progress=progress, threshold=threshold,
                             pixel_threshold=pixel_threshold))


@app.command()
def calibrate(
    model: str = MODEL,
    good: str = typer.Option(
        ..., help="Held-out good images: a folder, a text file listing image paths, or "
        "elpv:TYPE (the calibration half of the held-out functional cells)."
    ),
    max_fpr: float = typer.Option(
        DEFAULT_MAX_FPR, help="Target false-alarm rate on good images, in (0, 0.5]."
    ),
    device: str = DEVICE, batch_size: int = BATCH_SIZE, progress: bool = PROGRESS,
) -> None:
    """Image and pixel thresholds at a target false-alarm rate, from good images that
    training never saw; written to RUN/calibration.json (split-conformal guarantee)."""
    with cli_errors():
        record = calibrate_run(model, good, max_fpr=max_fpr, device=device,
                               batch_size=batch_size, progress=progress)
        print(summary_line(record))
