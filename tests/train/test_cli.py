"""nsa-train on the command line: trains from --shards A B, one-line errors, --version."""

from __future__ import annotations

import json
from pathlib import Path

from nsa.train.cli import app, default_run_dir
from typer.testing import CliRunner

import nsa

runner = CliRunner()
QUICK = ["--steps", "2", "--batch-size", "8", "--loader-workers", "0", "--threads", "1",
         "--no-progress", "--predictions", "2"]


def test_trains_on_several_stores_given_after_one_shards_option(tmp_path, make_store):
    a = make_store(tmp_path / "a.zarr", n=16, seed=1)
    b = make_store(tmp_path / "b.zarr", n=16, seed=2)
    result = runner.invoke(app, ["--shards", str(a), str(b), "--out", str(tmp_path / "run"),
                                 *QUICK])
    assert result.exit_code == 0, result.output
    stores = json.loads((tmp_path / "run" / "config.json").read_text())["stores"]
    assert [s["seed"] for s in stores] == [1, 2]


def test_a_missing_store_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["--shards", str(tmp_path / "none.zarr"),
                                 "--out", str(tmp_path / "run"), *QUICK])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'none.zarr'}: no such store"]


def test_version_prints_the_package_version_and_the_programs_help_lists_it():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == nsa.__version__
    shown = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "--version" in shown
    assert "train   Train the NSA model on shard stores (nsa-gen)." in shown  # one line each
    assert "export  Export a trained run to ONNX or TorchScript." in shown


def test_without_out_the_run_goes_to_runs_and_the_store_names(tmp_path, make_store,
                                                               monkeypatch):
    a = make_store(tmp_path / "a.zarr", n=16, seed=1)
    b = make_store(tmp_path / "b.zarr", n=16, seed=2)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["--shards", str(a), f"{b}/", *QUICK])
    assert result.exit_code == 0, result.output
    assert "note: no --out given; the run goes to runs/a+b" in result.stderr.splitlines()
    assert result.stdout.strip() == "runs/a+b"
    assert (tmp_path / "runs" / "a+b" / "config.json").is_file()
    assert default_run_dir(["s3://bucket/data/zipper.zarr"]) == Path("runs/zipper")


def test_num_workers_is_the_old_name_of_workers(tmp_path, make_store):
    a = make_store(tmp_path / "a.zarr", n=16, seed=1)
    result = runner.invoke(app, ["--shards", str(a), "--out", str(tmp_path / "run"),
                                 *QUICK, "--num-workers", "3"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "warning: --num-workers is deprecated; it is now called --workers",
        "error: --batch-size 8 must be divisible by --workers 3 (it is the global batch, "
        "split across workers)"]


def test_help_shows_each_default_as_the_value_it_is():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    shown = {line.split("--", 1)[1].split()[0]: line for line in result.output.splitlines()
             if line.lstrip("│ ").startswith("--")}
    assert "[default: 64]" in shown["batch-size"] and "[default: 0]" in shown["seed"]
    assert "[default: auto]" in shown["device"]
    assert "(" not in "".join(line.split("[default:", 1)[-1] for line in shown.values()
                              if "[default:" in line)
