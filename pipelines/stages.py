"""The three stages of one job, each skipped when it is done and its outputs are whole.

A job's folder holds ``shards.zarr`` (nsa-gen; or the store is under ``[generate] stores``,
a folder or an ``s3://`` URL), ``run/`` (nsa-train), ``eval/`` (nsa-eval) and one marker
per stage (see :mod:`nsa.pipelines.markers`). Each stage's hash holds
exactly what changes that stage's outputs, and the hash of the stage it reads from:

- generate: the training images (source kind, root, the category's own entries), the
  resolved synthesis settings (preset, overrides, size), ``n``, the seed and the chunk
  size; not ``workers``, nor the other categories of the config;
- train: the generate hash and every ``TrainConfig`` setting except those that change
  only where or how fast it runs (:data:`TRAIN_RUNTIME`); a setting added since
  (:data:`TRAIN_ADDED`) only when it is not at its default, so that folders made before
  it existed keep their hash;
- evaluate: the train hash, the test set (the category's test entries), the protocol and
  ``max_pictures``; not the device or batch size.

So changing ``n`` redoes generation, training and evaluation, changing ``protocol`` redoes
only evaluation, and removing a category or changing ``workers`` redoes nothing. A stage
whose marker says done is still redone when its outputs are gone or incomplete (the store
does not open as complete; the run lacks ``model.pt`` or ``config.json``; the evaluation
lacks a readable ``metrics.json``), and a stage whose input was made again is redone too.
"""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nsa.evaluate.run import evaluate
from nsa.generate.generation import generate_store
from nsa.generate.shards import FORMAT_VERSION, StoreError, StoreVersionError, open_store
from nsa.pipelines.config import Job, PipelineConfig
from nsa.pipelines.markers import (
    StageState,
    output_id,
    settings_hash,
    stage_state,
    write_marker,
)
from nsa.train.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE
from nsa.train.model import DEFAULT_FINAL_LAYER
from nsa.train.trainer import TrainConfig, train

STAGES = ("generate", "train", "evaluate")
#: ``TrainConfig`` fields that change where or how fast a run goes (or are set by the
#: pipeline itself), never what it produces.
TRAIN_RUNTIME = ("shards", "out", "resume", "address", "overwrite", "progress", "device",
                 "threads", "checkpoint_every")
#: ``TrainConfig`` settings added after pipelines had hashed the others, with their
#: defaults (what runs made before them used): at the default they stay out of the hash.
TRAIN_ADDED = {"final_layer": DEFAULT_FINAL_LAYER}
#: ``evaluate`` options that change where or how fast it runs, never the metrics.
EVALUATE_RUNTIME = ("device", "batch_size", "progress")
#: ``evaluate``'s own defaults, so that a config giving one explicitly hashes the same.
EVALUATE_DEFAULTS = {
    name: p.default for name, p in inspect.signature(evaluate).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}


@dataclass(frozen=True)
class JobPlan:
    """What each stage of a job would run with, and the hashes that identify it."""

    job: Job
    generate: dict[str, Any]
    train: dict[str, Any]
    evaluate: dict[str, Any]
    hashes: dict[str, str]

    @property
    def store(self) -> Path | str:
        return self.job.store

    @property
    def run(self) -> Path:
        return self.job.directory / "run"

    @property
    def eval_dir(self) -> Path:
        return self.job.directory / "eval"


def plan_job(config: PipelineConfig, job: Job) -> JobPlan:
    """The settings of each stage of ``job`` and their chained hashes."""
    generate = {
        "n": config.n_for(job.category), "seed": job.seed, "preset": config.generate.preset,
        "overrides": config.generate.set, "size": config.generate.size,
        "chunk_size": config.generate.chunk_size, "workers": config.generate.workers,
    }
    gen_hash = settings_hash({
        "source": config.source.source_identity(job.category),
        "settings": config.settings[job.category],
        **{key: generate[key] for key in ("n", "seed", "chunk_size")},
        # a store of an older format is regenerated, not refused by the next stage
        "format_version": FORMAT_VERSION,
    })
    train_opts = {**config.train.given(), "seed": job.seed}
    train_settings = asdict(TrainConfig(**train_opts))
    train_hash = settings_hash({
        "generate": gen_hash,
        **{k: v for k, v in train_settings.items()
           if k not in TRAIN_RUNTIME and not (k in TRAIN_ADDED and v == TRAIN_ADDED[k])},
    })
    evaluate_opts = config.evaluate.given()
    eval_settings = {**EVALUATE_DEFAULTS, **evaluate_opts}
    eval_hash = settings_hash({
        "train": train_hash, "testset": config.source.testset_identity(job.category),
        **{k: v for k, v in eval_settings.items() if k not in EVALUATE_RUNTIME},
    })
    return JobPlan(job, generate, train_opts, evaluate_opts,
                   {"generate": gen_hash, "train": train_hash, "evaluate": eval_hash})


def store_state(store: Path | str) -> StageState:
    """DONE when ``store`` opens as a complete NSA store; FRESH when it is one of another
    format version (made by another release: it is made anew, as resuming it is refused);
    INTERRUPTED otherwise (missing, incomplete or damaged: make what is missing)."""
    try:
        open_store(store)
    except StoreVersionError:
        return StageState.FRESH
    except StoreError:
        return StageState.INTERRUPTED
    return StageState.DONE


def run_complete(run: Path) -> bool:
    """Whether the run folder holds the final model and its config."""
    return (run / MODEL_FILE).is_file() and (run / CONFIG_FILE).is_file()


def read_metrics(path: Path) -> dict[str, Any] | None:
    """The content of a metrics.json, or None when it is missing or unreadable."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and "categories" in metrics else None


#: Of a marker's state and its store's, the one asking for more work (later here) wins.
_GENERATE_ORDER = (StageState.DONE, StageState.INTERRUPTED, StageState.FRESH)


def run_generate(config: PipelineConfig, plan: JobPlan, progress: bool) -> bool:
    """Generate the job's store unless done; return True when work was done."""
    directory, digest = plan.job.directory, plan.hashes["generate"]
    state = stage_state(directory, "generate", digest)
    if state is not StageState.FRESH:  # done or interrupted: as its store is now
        state = max(state, store_state(plan.store), key=_GENERATE_ORDER.index)
        if state is StageState.DONE:
            return False
    opts = dict(plan.generate)
    write_marker(directory, "generate", digest, done=False)
    generate_store(
        config.source.training_source(plan.job.category), plan.store,
        n=opts.pop("n"), seed=opts.pop("seed"), preset=opts.pop("preset"),
        resume=state is StageState.INTERRUPTED, overwrite=state is StageState.FRESH,
        progress=progress, **opts,
    )
    write_marker(directory, "generate", digest, done=True, store=plan.store)
    return True


def run_train(plan: JobPlan, progress: bool) -> bool:
    """Train on the job's store unless done (resuming an interrupted run exactly)."""
    directory, digest = plan.job.directory, plan.hashes["train"]
    store_id = output_id(directory, "generate")
    state = stage_state(directory, "train", digest, store_id)
    if state is StageState.DONE and run_complete(plan.run):
        return False
    write_marker(directory, "train", digest, done=False, input_id=store_id)
    if state is StageState.INTERRUPTED and (plan.run / CHECKPOINT_FILE).exists():
        config = TrainConfig(resume=str(plan.run), progress=progress,
                             device=plan.train.get("device", "auto"),
                             threads=plan.train.get("threads"))
    else:
        config = TrainConfig(shards=[str(plan.store)], out=str(plan.run), overwrite=True,
                             progress=progress, **plan.train)
    train(config)
    # outputs are named relative to the job's folder: right wherever the folder goes (a
    # staging copy of one in a bucket is removed once sent)
    write_marker(directory, "train", digest, done=True, input_id=store_id,
                 run=str(plan.run.relative_to(directory)))
    return True


def run_evaluate(config: PipelineConfig, plan: JobPlan, progress: bool
                 ) -> tuple[bool, dict[str, Any]]:
    """Evaluate the job's run unless done; return (work was done, metrics.json content)."""
    directory, digest = plan.job.directory, plan.hashes["evaluate"]
    run_id = output_id(directory, "train")
    state = stage_state(directory, "evaluate", digest, run_id)
    metrics_file = plan.eval_dir / "metrics.json"
    metrics = read_metrics(metrics_file) if state is StageState.DONE else None
    if metrics is not None:
        return False, metrics
    write_marker(directory, "evaluate", digest, done=False, input_id=run_id)
    if plan.eval_dir.exists():
        shutil.rmtree(plan.eval_dir)
    config.source.before_evaluate(plan.run, plan.job.category, progress)  # ELPV calibrates
    evaluate(config.source.test_sets(plan.job.category), plan.run, plan.eval_dir,
             progress=progress, **plan.evaluate)
    write_marker(directory, "evaluate", digest, done=True, input_id=run_id,
                 metrics=str(metrics_file.relative_to(directory)))
    return True, json.loads(metrics_file.read_text())
