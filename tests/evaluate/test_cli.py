"""nsa-eval on the command line: results on stdout, bad input as one line and exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from nsa.evaluate.cli import app
from typer.testing import CliRunner

import nsa

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_mvtec_command_prints_the_table_and_writes_the_outputs(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    result = run("mvtec", "--root", root, "--category", "widget", "--model", trained_run,
                 "--out", tmp_path / "out", "--protocol", "mvtec", "--max-pictures", "1",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert "| widget | 3 | 4 |" in result.stdout
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["protocol"] == "mvtec"


def test_folder_command_takes_several_defect_folders(
    trained_run: Path, sample_image, write_png, tmp_path: Path
) -> None:
    write_png(tmp_path / "good" / "g.png", sample_image(0)[0])
    for defect in ("a", "b"):
        image, mask = sample_image(1, defect=True)
        write_png(tmp_path / defect / "x.png", image)
        write_png(tmp_path / "masks" / defect / "x_mask.png", mask)
    result = run("folder", "--good", tmp_path / "good", "--defect", tmp_path / "a",
                 "--defect", tmp_path / "b", "--masks", tmp_path / "masks", "--name", "parts",
                 "--model", trained_run, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "| parts | 1 | 2 |" in result.stdout


def test_predict_command_prints_the_scores_file(
    trained_run: Path, sample_image, write_png, tmp_path: Path
) -> None:
    write_png(tmp_path / "new" / "a.png", sample_image(0)[0])
    result = run("predict", "--images", tmp_path / "new", "--model", trained_run,
                 "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "out" / "scores.csv")


def test_a_wrong_layout_is_one_line_and_exit_2(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "widget").mkdir()
    result = run("mvtec", "--root", tmp_path, "--category", "widget", "--model", trained_run,
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "widget/test", "MVTec AD layout")


def test_a_mask_of_another_size_is_one_line_and_exit_2(
    trained_run: Path, make_mvtec, write_png, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    bad = root / "widget" / "ground_truth" / "dent" / "001_mask.png"
    write_png(bad, np.zeros((40, 80), np.uint8))
    result = run("mvtec", "--root", root, "--category", "widget", "--model", trained_run,
                 "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(result, "001_mask.png", "80x40", "80x80")


def test_a_defect_image_without_mask_is_named(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    (root / "widget" / "ground_truth" / "scratch" / "000_mask.png").unlink()
    result = run("mvtec", "--root", root, "--category", "widget", "--model", trained_run,
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "scratch/000.png")


def test_a_run_without_model_is_one_line_and_exit_2(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(trained_run / "config.json", unfinished / "config.json")
    root = make_mvtec(tmp_path / "data")
    result = run("mvtec", "--root", root, "--category", "widget", "--model", unfinished,
                 "--out", tmp_path / "out")
    assert_one_line_error(result, str(unfinished), "no trained model")


def test_a_category_without_defective_images_is_one_line_and_exit_2(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data", defects={})
    result = run("mvtec", "--root", root, "--category", "widget", "--model", trained_run,
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "no defective test images")


def test_an_empty_image_folder_is_one_line_and_exit_2(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("predict", "--images", tmp_path / "empty", "--model", trained_run,
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "empty: no images")


def test_an_unknown_protocol_is_one_line_and_exit_2(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    result = run("mvtec", "--root", root, "--category", "widget", "--model", trained_run,
                 "--out", tmp_path / "out", "--protocol", "best")
    assert_one_line_error(result, "--protocol", "best")


@pytest.mark.parametrize("command", ["mvtec", "chestxray", "folder", "elpv", "predict"])
def test_every_command_has_help_with_defaults(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "--model" in result.stdout and "--out" in result.stdout


def test_version_prints_the_package_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == nsa.__version__
