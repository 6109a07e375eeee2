"""Pipelines submitted as Ray jobs to a real local head node (``ray start --head``), with
the output root a folder, or in an S3 bucket (moto's server) as on a cluster without a
shared file system, submitted the way the README tells users to."""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nsa.generate import shards
from nsa.train.checkpoint import CONFIG_FILE, MODEL_FILE
from ray_head import BIN, RAY, ray_head

from nsa.locations import parse_location

#: What carries S3 settings to a process; the head has none of them, so that a job has
#: exactly those it was submitted with. (IMDS stays off: nothing asks a cloud for a role.)
_S3_SETTINGS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_PROFILE")


@dataclass(frozen=True)
class Cluster:
    """A running head: its dashboard URL, Ray's temporary folder, the ``TMPDIR`` of every
    process on it, and the folder it was started in."""

    url: str
    ray_temp: Path
    tmpdir: Path
    cwd: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One head for the module's jobs, with a ``TMPDIR`` of its own and no S3 settings."""
    tmpdir, cwd = tmp_path_factory.mktemp("head-tmp"), tmp_path_factory.mktemp("head-cwd")
    env = {name: value for name, value in os.environ.items() if name not in _S3_SETTINGS}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", TMPDIR=str(tmpdir))
    with ray_head(env, cwd) as (url, ray_temp):
        yield Cluster(url, ray_temp, tmpdir, cwd)


def _submit(cluster: Cluster, entrypoint: list[str], cwd: Path,
            options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``ray job submit`` from folder ``cwd``: returns when the job has ended, with its
    logs in stdout."""
    return subprocess.run(
        [*RAY, "job", "submit", "--address", cluster.url, *options, "--",
         *entrypoint],
        cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )


def test_ray_job_submit_runs_the_pipeline_on_the_cluster(cluster, tiny_config,
                                                        two_categories, tmp_path):
    """... and the command's log shows each job's progress, its stages on the cluster's
    workers included: lines labelled with the job's name, each stage's last one (100%)
    before the job's ``ended:`` line."""
    out = tmp_path / "out"
    config = tiny_config(tmp_path / "c.toml", two_categories, out, seeds=(0,))
    job = _submit(cluster, [str(BIN / "nsa-pipeline"), "run", str(config), "--address",
                            "auto"], tmp_path)
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout
    assert "bottle/seed0: ran generate, train, evaluate" in job.stdout
    log = job.stdout.splitlines()
    for name in ("bottle/seed0", "zipper/seed0"):
        ended = log.index(f"ended: {name}: ran generate, train, evaluate")
        for stage, unit in (("generating", "examples"), ("training loss ", "examples"),
                            ("evaluating ", "images")):
            lasts = [i for i, line in enumerate(log) if line.startswith(f"{name} {stage}")
                     and f" {unit} (100.0%)  " in line and line.endswith("ETA 0:00:00")]
            assert lasts and lasts[-1] < ended, (name, stage, log)
    for category in ("bottle", "zipper"):
        metrics = json.loads((out / category / "seed0" / "eval" / "metrics.json").read_text())
        assert 0.0 <= metrics["mean"]["image_auroc"] <= 1.0
    assert (out / "summary.md").exists()


def _s3_job(tiny_config, two_categories: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A folder holding only a 1-job config (bottle, seed 0; its ``out`` a local folder
    that must stay unused), and an empty folder to submit from."""
    working_dir, submit_from = tmp_path / "job", tmp_path / "submit"
    working_dir.mkdir()
    submit_from.mkdir()
    tiny_config(working_dir / "c.toml", two_categories, tmp_path / "not-used", seeds=(0,),
                categories=("bottle",))
    return working_dir, submit_from


def test_a_ray_job_whose_out_is_on_s3_leaves_everything_in_the_bucket_and_nothing_on_disk(
        cluster, tiny_config, two_categories, s3_bucket, tmp_path):
    """As the README's "On a cluster without a shared file system": the config travels
    as the job's working directory, the credentials and endpoint in its runtime
    environment (the head has none). Every output is in the bucket; no staging folder is
    left under the processes' TMPDIR, and nothing is written to the job's working
    directory, the folder it was submitted from, or the head's folder."""
    working_dir, submit_from = _s3_job(tiny_config, two_categories, tmp_path)
    out = f"{s3_bucket}/runs"
    env_vars = {name: os.environ[name] for name in
                ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
    job = _submit(cluster, [str(BIN / "nsa-pipeline"), "run", "c.toml", "--out", out,
                            "--address", "auto", "--no-progress"], submit_from,
                  ("--working-dir", str(working_dir),
                   "--runtime-env-json", json.dumps({"env_vars": env_vars})))
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout
    assert "bottle/seed0: ran generate, train, evaluate" in job.stdout
    assert f"tables: {out}/summary.md and {out}/summary.csv" in job.stdout

    root = parse_location(out)
    name = "bottle/seed0"
    assert {f"{name}/{key}" for key in (
        "generate.json", "train.json", "evaluate.json", f"run/{MODEL_FILE}",
        f"run/{CONFIG_FILE}", "eval/metrics.json", "shards.zarr/zarr.json")} \
        | {"pipeline-log.jsonl", "summary.md", "summary.csv"} <= set(root.list_keys())
    assert shards.open_store(f"{out}/{name}/shards.zarr").complete
    fs = root.filesystem()

    def read(key: str) -> bytes:
        return fs.cat_file(f"{root.fs_path}/{key}")

    for stage in ("generate", "train", "evaluate"):
        assert json.loads(read(f"{name}/{stage}.json"))["done"] is True
    metrics = json.loads(read(f"{name}/eval/metrics.json"))
    for key in ("image_auroc", "image_ap", "pixel_auroc"):
        assert 0.0 <= metrics["mean"][key] <= 1.0 and math.isfinite(metrics["mean"][key])
    log = [json.loads(line) for line in read("pipeline-log.jsonl").decode().splitlines()]
    assert [(r["job"], r["stage"], r["ran"]) for r in log] == [
        (name, "generate", True), (name, "train", True), (name, "evaluate", True)]
    assert read("summary.csv").decode().splitlines()[1].startswith("bottle,1,0,")

    staging = cluster.tmpdir / "nsa-pipeline"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.rglob("*"))
    (unpacked,) = [folder for folder in cluster.ray_temp.glob(
        "session_latest/runtime_resources/working_dir_files/_ray_pkg_*") if folder.is_dir()]
    assert [p.name for p in unpacked.rglob("*")] == ["c.toml"]  # the job's cwd
    assert not any(submit_from.iterdir()) and not any(cluster.cwd.iterdir())
    assert not (tmp_path / "not-used").exists()


def test_a_ray_job_without_s3_credentials_fails_with_one_line_naming_the_url(
        cluster, tiny_config, two_categories, s3_bucket, tmp_path):
    working_dir, submit_from = _s3_job(tiny_config, two_categories, tmp_path)
    out = f"{s3_bucket}/runs"
    job = _submit(cluster, [str(BIN / "nsa-pipeline"), "run", "c.toml", "--out", out,
                            "--address", "auto", "--no-progress"], submit_from,
                  ("--working-dir", str(working_dir)))
    assert job.returncode != 0
    logs = job.stdout + job.stderr
    assert "Job entrypoint command failed with exit code 2" in logs, logs[-3000:]
    # Ray may show the job's output twice: as it comes, and in the failure's status
    errors = {line for line in logs.splitlines() if line.startswith("error:")}
    assert errors == {f"error: --out: {out}: no S3 credentials (set AWS_ACCESS_KEY_ID and "
                      "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"}, logs[-3000:]
    assert "Traceback" not in logs
    assert parse_location(out).list_keys() == []
