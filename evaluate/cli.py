"""``nsa-eval``: evaluate a trained run on a test set, or predict maps for new images.

Thin wrapper: each subcommand builds a test set (:mod:`nsa.evaluate.testsets`) and calls
:func:`nsa.evaluate.run.evaluate` (or :func:`nsa.evaluate.predict.predict`), then prints
the markdown table (or the CSV path) on stdout.
"""

from __future__ import annotations

from pathlib import Path

import typer
from nsa.evaluate.calibrate import calibrate as calibrate_run
from nsa.evaluate.calibration import DEFAULT_MAX_FPR, summary_line
from nsa.evaluate.eval_decisions import decisions_markdown
from nsa.evaluate.predict import predict as predict_images
from nsa.evaluate.run import evaluate
from nsa.evaluate.tables import markdown
from nsa.evaluate.testsets import (
    TestSet,
    chestxray_testset,
    elpv_testset,
    folder_testset,
    mvtec_testset,
)

from nsa.errors import cli_errors
from nsa.version_option import show_version

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="Evaluate NSA models: image/pixel AUROC and AP, AU-PRO, tables and pictures.",
)

MODEL = typer.Option(..., "--model", help="Run directory written by nsa-train.")
OUT = typer.Option(..., "--out", help="Folder for metrics.json/.csv/.md, maps/, curves.png.")
PROTOCOL = typer.Option(
    "nsa", help="nsa: the paper's (side px, mean score); mvtec: native size, max score."
)
DEVICE = typer.Option("auto", help="auto, cpu or cuda.")
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


def _run(testsets: list[TestSet], model, out, protocol, device, batch_size, max_pictures,
         progress) -> None:
    result = evaluate(
        testsets, model, out, protocol=protocol, device=device, batch_size=batch_size,
        max_pictures=max_pictures, progress=progress,
    )
    print(markdown(result) + decisions_markdown(result), end="")


@app.command()
def mvtec(
    root: Path = typer.Option(..., help="MVTec AD root (holding one folder per category)."),
    category: list[str] = typer.Option(..., help="Category to evaluate; repeat for several."),
    model: Path = MODEL, out: Path = OUT, protocol: str = PROTOCOL, device: str = DEVICE,
    batch_size: int = BATCH_SIZE, max_pictures: int = MAX_PICTURES, progress: bool = PROGRESS,
) -> None:
    """MVTec AD test split: C/test/good, C/test/<defect>/, C/ground_truth/<defect>/."""
    with cli_errors():
        testsets = [mvtec_testset(root, c) for c in category]
        _run(testsets, model, out, protocol, device, batch_size, max_pictures, progress)


@app.command()
def chestxray(
    root: Path = typer.Option(..., help="Folder holding the NIH ChestX-ray14 images."),
    normal_list: Path = typer.Option(..., help="File naming the normal test images."),
    anomaly_list: Path = typer.Option(..., help="File naming the anomalous test images."),
    name: str = typer.Option(None, help="Row name (default: from the list names)."),
    model: Path = MODEL, out: Path = OUT, protocol: str = PROTOCOL, device: str = DEVICE,
    batch_size: int = BATCH_SIZE, max_pictures: int = MAX_PICTURES, progress: bool = PROGRESS,
) -> None:
    """Chest X-rays, normal against anomalous lists: image-level metrics only."""
    with cli_errors():
        testsets = [chestxray_testset(root, normal_list, anomaly_list, name)]
        _run(testsets, model, out, protocol, device, batch_size, max_pictures, progress)


@app.command()
def folder(
    good: Path = typer.Option(..., help="Folder of defect-free test images."),
    defect: list[Path] = typer.Option(..., help="Folder of defective images; repeatable."),
    masks: Path = typer.Option(
        None, help="Masks <stem>_mask.<ext> or <stem>.<ext> (any image format, any case; "
        "non-zero = defect), in MASKS/<defect folder>/ or MASKS/ (without: pixel metrics "
        "are null)."
    ),
    name: str = typer.Option(None, help="Row name (default: the good folder's parent)."),
    model: Path = MODEL, out: Path = OUT, protocol: str = PROTOCOL, device: str = DEVICE,
    batch_size: int = BATCH_SIZE, max_pictures: int = MAX_PICTURES, progress: bool = PROGRESS,
) -> None:
    """Custom data: one good folder against any number of defect folders."""
    with cli_errors():
        testsets = [folder_testset(good, defect, masks, name)]
        _run(testsets, model, out, protocol, device, batch_size, max_pictures, progress)


@app.command()
def elpv(
    cell_type: str = typer.Option(..., "--type", help="Cell type: mono or poly."),
    model: Path = MODEL, out: Path = OUT, protocol: str = PROTOCOL, device: str = DEVICE,
    batch_size: int = BATCH_SIZE, max_pictures: int = MAX_PICTURES, progress: bool = PROGRESS,
) -> None:
    """ELPV solar cells: held-out functional cells against defective ones (image level)."""
    with cli_errors():
        _run([elpv_testset(cell_type)], model, out, protocol, device, batch_size, max_pictures,
             progress)


@app.command()
def predict(
    images: Path = typer.Option(..., help="Folder of unlabelled images."),
    model: Path = typer.Option(
        ..., "--model", help="Run directory written by nsa-train, or its exported model.onnx."
    ),
    out: Path = typer.Option(..., help="Folder for maps/ (.png, .npy) and scores.csv."),
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
    model: Path = MODEL,
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
