"""End-to-end pipeline runs on the tiny two-category fixture: skipping, killing, resuming."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import zarr
from nsa.generate.shards import FORMAT_VERSION, open_store
from nsa.pipelines.config import load_config
from nsa.pipelines.runner import LOG_FILE, run_pipeline

BIN = Path(sys.executable).parent
CATEGORIES = ("bottle", "zipper")  # those of the two_categories fixture


def _log(out: Path) -> list[dict]:
    path = out / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_second_run_skips_every_finished_stage(tiny_config, two_categories, local_ray, tmp_path,
                                                capfd):
    out = tmp_path / "out"
    config = load_config(tiny_config(tmp_path / "c.toml", two_categories, out, seeds=(0,)))
    first = run_pipeline(config, progress=True)
    assert [o.error for o in first] == [None, None]
    assert [o.ran for o in first] == [["generate", "train", "evaluate"]] * 2
    ended = [line for line in capfd.readouterr().err.splitlines() if line.startswith("ended")]
    assert ended == [f"ended: {category}/seed0: ran generate, train, evaluate"
                     for category in CATEGORIES]  # each as it ended
    second = run_pipeline(config, progress=False)
    assert [o.ran for o in second] == [[], []]
    assert second[0].metrics == first[0].metrics
    # one category fewer and more workers: the remaining job's outputs are still right
    fewer = load_config(tiny_config(tmp_path / "d.toml", two_categories, out, seeds=(0,),
                                    categories=CATEGORIES[:1], workers=2))
    (third,) = run_pipeline(fewer, progress=False)
    assert third.ran == [] and third.metrics == first[0].metrics


def test_a_rerun_redoes_exactly_the_stages_whose_settings_or_outputs_changed(
        tiny_config, two_categories, local_ray, tmp_path):
    out = tmp_path / "out"
    job = out / CATEGORIES[0] / "seed0"

    def run(name: str, **options) -> list[str]:
        path = tiny_config(tmp_path / name, two_categories, out, seeds=(0,),
                           categories=CATEGORIES[:1], **options)
        (outcome,) = run_pipeline(load_config(path), progress=False)
        assert outcome.error is None, outcome.error
        return outcome.ran

    assert run("a.toml") == ["generate", "train", "evaluate"]
    # settings: each stage is redone when its own settings or an upstream stage's change
    assert run("b.toml", protocol="mvtec") == ["evaluate"]
    assert json.loads((job / "eval" / "metrics.json").read_text())["protocol"] == "mvtec"
    assert run("c.toml", protocol="mvtec", steps=3) == ["train", "evaluate"]
    # outputs: a stage marked done is redone when what it wrote is gone
    (job / "run" / "model.pt").unlink()
    assert run("c.toml", protocol="mvtec", steps=3) == ["train", "evaluate"]
    assert (job / "run" / "model.pt").is_file()
    (job / "eval" / "metrics.json").unlink()
    assert run("c.toml", protocol="mvtec", steps=3) == ["evaluate"]
    shutil.rmtree(job / "shards.zarr")
    assert run("c.toml", protocol="mvtec", steps=3) == ["generate", "train", "evaluate"]
    assert run("c.toml", protocol="mvtec", steps=3) == []
    # a store of another format version (put there by hand, or an earlier run's) is made
    # anew: resuming it is refused, and every run failed the same way
    version = zarr.open_group(str(job / "shards.zarr"), mode="r+").attrs
    version["format_version"] = FORMAT_VERSION - 1
    assert run("c.toml", protocol="mvtec", steps=3) == ["generate", "train", "evaluate"]
    assert open_store(job / "shards.zarr").attrs["format_version"] == FORMAT_VERSION


def test_a_failed_category_is_reported_and_the_others_finish(tiny_config, two_categories, local_ray,
                                                             tmp_path):
    root = tmp_path / "root"
    (root / CATEGORIES[0]).mkdir(parents=True)  # first category: no training images
    os.symlink(two_categories / CATEGORIES[1], root / CATEGORIES[1])
    config = load_config(tiny_config(tmp_path / "c.toml", root, tmp_path / "out", seeds=(0,)))
    broken, fine = run_pipeline(config, progress=False)
    assert broken.error and "train/good" in broken.error and broken.metrics is None
    assert fine.error is None and fine.metrics is not None


def test_killed_after_the_first_category_a_rerun_does_only_what_is_missing(
        tiny_config, two_categories, tmp_path):
    out = tmp_path / "out"
    config = tiny_config(tmp_path / "c.toml", two_categories, out)
    command = [str(BIN / "nsa-pipeline"), "run", str(config), "--no-progress"]
    first_done = {f"{CATEGORIES[0]}/seed{seed}" for seed in (0, 1)}
    runner = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and runner.poll() is None:
            evaluated = {e["job"] for e in _log(out) if e["stage"] == "evaluate"}
            if first_done <= evaluated:
                break
            time.sleep(0.1)
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)
    before = _log(out)
    assert {e["job"] for e in before if e["stage"] == "evaluate"} == first_done, \
        "the kill did not land between the categories"

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    ended = [line for line in rerun.stderr.splitlines() if line.startswith("ended: ")]
    assert ended[:2] == [f"ended: {job}: ran nothing (all done before)"  # said without
                         for job in sorted(first_done)], rerun.stderr  # progress too
    assert [line.split(": ran ")[0] for line in ended[2:]] == [
        f"ended: {CATEGORIES[1]}/seed{seed}" for seed in (0, 1)]
    assert all(line.endswith("train, evaluate") for line in ended[2:]), rerun.stderr
    after = _log(out)[len(before):]
    assert all(not e["ran"] for e in after if e["job"] in first_done)
    for job in (f"{CATEGORIES[1]}/seed{seed}" for seed in (0, 1)):
        for stage in ("generate", "train", "evaluate"):
            ran = [e for e in before + after if e["job"] == job and e["stage"] == stage
                   and e["ran"]]
            assert len(ran) == 1, (job, stage, ran)
    assert "| bottle | 2 |" in rerun.stdout and "| zipper | 2 |" in rerun.stdout


def test_a_job_whose_ray_worker_died_says_so_in_our_words():
    import ray
    from nsa.pipelines.runner import _lost_task_line

    died = _lost_task_line(ray.exceptions.WorkerCrashedError())
    assert died.startswith("the Ray worker running it died (killed, or out of memory)")
    assert died.endswith("running the same command again redoes what is missing")
    assert "python-core-worker" not in died  # Ray's own words name no folder
    assert "ran low on memory" in _lost_task_line(ray.exceptions.OutOfMemoryError("x"))
    assert _lost_task_line(ValueError("y")) == "unexpected error: ValueError: y"
