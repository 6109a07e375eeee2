"""nsa-train on the command line: trains from --shards A B, one-line errors, --version."""

from __future__ import annotations

import json

from nsa.train.cli import app
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


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == nsa.__version__
