"""The three stages of one job, each skipped when its marker says it is already done.

A job's folder holds ``shards.zarr`` (nsa-gen), ``run/`` (nsa-train), ``eval/`` (nsa-eval)
and one marker per stage (see :mod:`nsa.pipelines.markers`). The hash of each stage
includes the hash of the stage it reads from, so changing ``n`` redoes generation,
training and evaluation, while changing ``protocol`` redoes only evaluation.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nsa.evaluate.calibrate import calibrate_held_out_elpv
from nsa.evaluate.run import evaluate
from nsa.evaluate.testsets import (
    TestSet,
    chestxray_testset,
    elpv_testset,
    folder_testset,
    mvtec_testset,
)
from nsa.generate.generation import generate_store
from nsa.generate.sources import (
    Source,
    chestxray_source,
    elpv_source,
    folder_source,
    mvtec_source,
)
from nsa.pipelines.config import ConfigError, Job, PipelineConfig
from nsa.pipelines.markers import StageState, settings_hash, stage_state, write_marker
from nsa.train.checkpoint import CHECKPOINT_FILE
from nsa.train.trainer import TrainConfig, train

STAGES = ("generate", "train", "evaluate")


@dataclass(frozen=True)
class JobPlan:
    """What each stage of a job would run with, and the hashes that identify it."""

    job: Job
    generate: dict[str, Any]
    train: dict[str, Any]
    evaluate: dict[str, Any]
    hashes: dict[str, str]

    @property
    def store(self) -> Path:
        return self.job.directory / "shards.zarr"

    @property
    def run(self) -> Path:
        return self.job.directory / "run"

    @property
    def eval_dir(self) -> Path:
        return self.job.directory / "eval"


def plan_job(config: PipelineConfig, job: Job) -> JobPlan:
    """The settings of each stage of ``job`` and their chained hashes."""
    generate = {k: v for k, v in config.generate.items() if k != "n_by_category"}
    generate.update(n=config.n_for(job.category), seed=job.seed)
    train_opts = {**config.train, "seed": job.seed}
    evaluate_opts = dict(config.evaluate)
    source = {**config.source, "category": job.category}
    gen_hash = settings_hash({"source": source, **generate})
    train_hash = settings_hash({"generate": gen_hash, **train_opts})
    eval_hash = settings_hash({"train": train_hash, "source": source, **evaluate_opts})
    return JobPlan(job, generate, train_opts, evaluate_opts,
                   {"generate": gen_hash, "train": train_hash, "evaluate": eval_hash})


def training_source(config: PipelineConfig, category: str) -> Source:
    """The normal images a job generates from."""
    source = config.source
    kind = source["kind"]
    if kind == "elpv":
        return elpv_source(category, "train")
    if kind == "mvtec":
        return mvtec_source(_root(config), category)
    if kind == "chestxray":
        lists = _chestxray_lists(config, category)
        return chestxray_source(_root(config), lists["train"])
    return folder_source(_root(config))


def test_sets(config: PipelineConfig, category: str) -> list[TestSet]:
    """The labelled test set a job is evaluated on."""
    source = config.source
    kind = source["kind"]
    if kind == "elpv":
        return [elpv_testset(category)]
    if kind == "mvtec":
        return [mvtec_testset(_root(config), category)]
    if kind == "chestxray":
        lists = _chestxray_lists(config, category)
        return [chestxray_testset(_root(config), lists["normal_test"], lists["anomaly_test"])]
    for key in ("test_good", "test_defects"):
        if key not in source:
            raise ConfigError(f"{config.path}: [source] of kind folder needs {key}")
    return [folder_testset(source["test_good"], source["test_defects"],
                           source.get("test_masks"), name=category)]


def _root(config: PipelineConfig) -> Path:
    if "root" not in config.source:
        raise ConfigError(f"{config.path}: [source] needs root = \"...\"")
    return Path(config.source["root"])


def _chestxray_lists(config: PipelineConfig, category: str) -> dict[str, Path]:
    lists_dir = Path(config.source.get("lists_dir", "."))
    entry = config.source["lists"][category]
    missing = {"train", "normal_test", "anomaly_test"} - set(entry)
    if missing:
        raise ConfigError(
            f"{config.path}: [source.lists.{category}] lacks {', '.join(sorted(missing))}"
        )
    return {key: lists_dir / value for key, value in entry.items()}


def run_generate(config: PipelineConfig, plan: JobPlan, progress: bool) -> bool:
    """Generate the job's store unless done; return True when work was done."""
    state = stage_state(plan.job.directory, "generate", plan.hashes["generate"])
    if state is StageState.DONE:
        return False
    opts = dict(plan.generate)
    write_marker(plan.job.directory, "generate", plan.hashes["generate"], done=False)
    generate_store(
        training_source(config, plan.job.category), plan.store,
        n=opts.pop("n"), seed=opts.pop("seed"), preset=opts.pop("preset", None),
        resume=state is StageState.INTERRUPTED, overwrite=state is StageState.FRESH,
        progress=progress, **opts,
    )
    write_marker(plan.job.directory, "generate", plan.hashes["generate"], done=True,
                 store=plan.store)
    return True


def run_train(plan: JobPlan, progress: bool) -> bool:
    """Train on the job's store unless done (resuming an interrupted run exactly)."""
    state = stage_state(plan.job.directory, "train", plan.hashes["train"])
    if state is StageState.DONE:
        return False
    write_marker(plan.job.directory, "train", plan.hashes["train"], done=False)
    if state is StageState.INTERRUPTED and (plan.run / CHECKPOINT_FILE).exists():
        config = TrainConfig(resume=str(plan.run), progress=progress,
                             device=plan.train.get("device", "auto"))
    else:
        config = TrainConfig(shards=[str(plan.store)], out=str(plan.run), overwrite=True,
                             progress=progress, **plan.train)
    train(config)
    write_marker(plan.job.directory, "train", plan.hashes["train"], done=True, run=plan.run)
    return True


def run_evaluate(config: PipelineConfig, plan: JobPlan, progress: bool
                 ) -> tuple[bool, dict[str, Any]]:
    """Evaluate the job's run unless done; return (work was done, metrics.json content)."""
    state = stage_state(plan.job.directory, "evaluate", plan.hashes["evaluate"])
    metrics_file = plan.eval_dir / "metrics.json"
    if state is StageState.DONE and metrics_file.exists():
        return False, json.loads(metrics_file.read_text())
    write_marker(plan.job.directory, "evaluate", plan.hashes["evaluate"], done=False)
    if plan.eval_dir.exists():
        shutil.rmtree(plan.eval_dir)
    if config.source["kind"] == "elpv":  # held-out good cells: calibrate on half of them
        calibrate_held_out_elpv(plan.run, plan.job.category, progress)
    evaluate(test_sets(config, plan.job.category), plan.run, plan.eval_dir,
             progress=progress, **plan.evaluate)
    write_marker(plan.job.directory, "evaluate", plan.hashes["evaluate"], done=True,
                 metrics=metrics_file)
    return True, json.loads(metrics_file.read_text())
