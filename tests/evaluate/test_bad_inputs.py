"""Every expected failure of nsa-eval and predict is one `error:` line, the right exit code,
and nothing that looks finished (issue 11 kind 6, issue 12 items 2, 7, 9).

Each case builds one bad input (an empty image or mask file, a corrupt image, ``--out``
naming a file, a diverged model whose weights hold NaN, a full disk) and runs the real CLI.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from nsa.evaluate.cli import app
from nsa.evaluate.inference import check_finite_maps
from nsa.evaluate.outputs import MARK_FILE
from typer.testing import CliRunner

from nsa.errors import UserError

runner = CliRunner()


@pytest.fixture(scope="module")
def diverged_run(trained_run: Path, tmp_path_factory) -> Path:
    """A copy of the trained run whose model.pt holds NaN weights (training diverged)."""
    run = tmp_path_factory.mktemp("diverged") / "run"
    shutil.copytree(trained_run, run)
    state = torch.load(run / "model.pt", weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = torch.full_like(state["model"][first], float("nan"))
    torch.save(state, run / "model.pt")
    return run


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 KiB tmpfs (needs root or CAP_SYS_ADMIN; skipped elsewhere), unmounted after."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _one_error_line(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith("warning: ")]  # e.g. "no calibration", said before
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _eval(root: Path, model: Path, out: Path, *extra: str):
    return runner.invoke(app, ["mvtec", "--root", str(root), "--category", "widget",
                               "--model", str(model), "--out", str(out), "--no-progress",
                               *extra])


def _predict(images: Path, model: Path, out: Path):
    return runner.invoke(app, ["predict", "--images", str(images), "--model", str(model),
                               "--out", str(out), "--no-progress"])


@pytest.mark.parametrize("broken", ["test/good/001.png", "test/dent/000.png",
                                    "ground_truth/scratch/001_mask.png"])
def test_an_empty_image_or_mask_file_is_named_before_anything_is_written(
    trained_run: Path, make_mvtec, tmp_path: Path, broken: str
) -> None:
    root = make_mvtec(tmp_path / "data")
    (root / "widget" / broken).write_bytes(b"")
    result = _eval(root, trained_run, tmp_path / "out")
    _one_error_line(result, 2, broken, "empty file (0 bytes)")
    assert not (tmp_path / "out").exists()


def test_a_corrupt_image_is_named_and_leaves_no_metrics(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    (root / "widget" / "test" / "dent" / "001.png").write_bytes(b"not a png at all" * 20)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}")  # an earlier evaluation's
    (tmp_path / "out" / MARK_FILE).write_text('{"outputs": ["metrics.json"]}')
    result = _eval(root, trained_run, tmp_path / "out")
    _one_error_line(result, 2, "dent/001.png", "not a readable image")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_predict_names_an_empty_image_before_anything_is_written(
    trained_run: Path, sample_image, write_png, tmp_path: Path
) -> None:
    write_png(tmp_path / "new" / "a.png", sample_image(0)[0])
    (tmp_path / "new" / "b.PNG").write_bytes(b"")
    result = _predict(tmp_path / "new", trained_run, tmp_path / "out")
    _one_error_line(result, 2, "b.PNG", "empty file (0 bytes)")
    assert not (tmp_path / "out").exists()


def test_out_naming_a_file_is_one_line(
    trained_run: Path, make_mvtec, sample_image, write_png, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    write_png(tmp_path / "new" / "a.png", sample_image(0)[0])
    (tmp_path / "file").write_text("mine")
    _one_error_line(_eval(root, trained_run, tmp_path / "file"), 2, "--out", "not a folder")
    _one_error_line(_predict(tmp_path / "new", trained_run, tmp_path / "file"), 2,
                    "--out", "not a folder")
    assert (tmp_path / "file").read_text() == "mine"


def test_a_folder_that_is_not_an_nsa_eval_output_is_refused_and_untouched(
    trained_run: Path, make_mvtec, sample_image, write_png, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    write_png(tmp_path / "new" / "a.png", sample_image(0)[0])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    _one_error_line(_eval(root, trained_run, tmp_path / "mine"), 2, "--out",
                    str(tmp_path / "mine"), "not an nsa-eval output", "notes.txt")
    _one_error_line(_predict(tmp_path / "new", trained_run, tmp_path / "mine"), 2, "--out",
                    "not an nsa-eval output", "choose another --out")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_a_diverged_model_is_refused_with_masks_without_masks_and_in_predict(
    diverged_run: Path, make_mvtec, sample_image, write_png, tmp_path: Path
) -> None:
    """It printed AUROC 50.0 / AP 36.5 from NaN scores (no masks) or an IndexError."""
    root = make_mvtec(tmp_path / "data")
    for result in (
        _eval(root, diverged_run, tmp_path / "out"),
        runner.invoke(app, ["folder", "--good", str(root / "widget" / "test" / "good"),
                            "--defect", str(root / "widget" / "test" / "dent"),
                            "--model", str(diverged_run), "--out", str(tmp_path / "out"),
                            "--no-progress"]),
        _predict(root / "widget" / "test" / "good", diverged_run, tmp_path / "out"),
    ):
        _one_error_line(result, 2, str(diverged_run), "NaN or infinite", "diverged")
    assert not (tmp_path / "out").exists()


def test_non_finite_maps_are_refused_naming_the_run_and_image() -> None:
    maps = np.zeros((3, 4, 4), np.float32)
    check_finite_maps(maps, "run", [Path("a"), Path("b"), Path("c")])
    maps[1, 2, 2] = np.inf
    with pytest.raises(UserError, match="run: the model's anomaly map of b holds NaN"):
        check_finite_maps(maps, "run", [Path("a"), Path("b"), Path("c")])


def test_no_space_left_is_one_line_naming_the_path_exit_1(
    trained_run: Path, make_mvtec, sample_image, write_png, tmp_path: Path, full_disk: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    line = _one_error_line(_eval(root, trained_run, full_disk / "eval"), 1,
                           str(full_disk / "eval"), "no space left on device")
    assert not (full_disk / "eval" / "metrics.json").exists(), line
    shutil.rmtree(full_disk / "eval")
    for i in range(8):
        write_png(tmp_path / "new" / f"{i}.png", sample_image(i)[0])
    _one_error_line(_predict(tmp_path / "new", trained_run, full_disk / "maps"), 1,
                    str(full_disk / "maps"), "no space left on device")
    assert not (full_disk / "maps" / "predict.json").exists()
