"""Run every (category, seed) job of a config: locally, or as Ray tasks on a cluster.

Locally, jobs run one after another in this process, each generate -> train -> evaluate.
With ``address``, the driver joins the cluster: generation of each job spreads its chunks
over every CPU of the cluster (nsa-gen's own Ray tasks), and as soon as a job's store is
finished its training and evaluation are submitted as one Ray task that asks for a GPU
when the cluster has one, so several jobs train at once on a multi-GPU cluster. With
progress on, the command shows the progress of every running job's stages, each task
labelled with the job's name, as the stages send it (:mod:`nsa.progress_relay`).

Either way a failed job is reported and the others finish; the stages it did finish keep
their markers, so running the same command again redoes only what is missing. Every
stage that ran or was skipped is appended to ``<out>/pipeline-log.jsonl``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nsa.pipelines.config import PipelineConfig, check_inputs
from nsa.pipelines.markers import StageState, output_id, stage_state
from nsa.pipelines.remote_out import (
    fetch_files,
    fetch_job,
    present,
    send_files,
    send_job,
)
from nsa.pipelines.stages import (
    JobPlan,
    plan_job,
    read_metrics,
    run_evaluate,
    run_generate,
    run_train,
)
from nsa.train.checkpoint import CONFIG_FILE, MODEL_FILE

from nsa.errors import UserError, os_error, writing
from nsa.progress_relay import relayed_progress, sending_progress
from nsa.ray_session import ray_session

LOG_FILE = "pipeline-log.jsonl"
#: A job's metrics, under its folder.
METRICS_JSON = "eval/metrics.json"


@dataclass
class JobOutcome:
    """How one job ended: its metrics, or the one-line error that stopped it."""

    name: str
    category: str
    seed: int
    metrics: dict[str, Any] | None = None
    error: str | None = None
    ran: list[str] = field(default_factory=list)

    def line(self) -> str:
        """``<category>/seed<k>: ran generate, train`` or ``...: FAILED: <error>``."""
        if self.error:
            return f"{self.name}: FAILED: {self.error}"
        return f"{self.name}: ran {', '.join(self.ran) or 'nothing (all done before)'}"


def _ended(outcome: JobOutcome) -> None:
    """Say on stderr that a job has ended, as the jobs end (on Ray, in the order they
    end), with or without progress: one line per job, which a long pipeline's log needs
    most when it shows no bars."""
    print(f"ended: {outcome.line()}", file=sys.stderr, flush=True)


def _log(out: Path, job: str, stage: str, ran: bool) -> None:
    record = {"time": time.time(), "job": job, "stage": stage, "ran": ran}
    with writing(out / LOG_FILE):
        out.mkdir(parents=True, exist_ok=True)
        with open(out / LOG_FILE, "a") as log:
            log.write(json.dumps(record) + "\n")


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, OSError):
        return str(os_error(exc))
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return f"unexpected error: {last}"


def _lost_task_line(exc: Exception) -> str:
    """The error of a job whose Ray task did not return: its worker or node gone (said in
    our words: Ray's own sends the user to log files without saying where), else the
    error the task raised."""
    import ray

    again = "running the same command again redoes what is missing"
    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        return f"Ray stopped the worker running it: its node ran low on memory; {again}"
    if isinstance(exc, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        return (f"the Ray worker running it died (killed, or out of memory) or its node "
                f"left the cluster; {again}")
    return _error_line(getattr(exc, "cause", None) or exc)


def _progress_to(queue: Any, plan: JobPlan) -> AbstractContextManager[None]:
    """In its body, the stages' progress goes to ``queue`` labelled with the job's name
    (:func:`~nsa.progress_relay.sending_progress`); drawn here when ``queue`` is None."""
    return nullcontext() if queue is None else sending_progress(queue, plan.job.name)


def _train_and_evaluate(config: PipelineConfig, plan: JobPlan, progress: bool,
                        progress_queue: Any = None
                        ) -> tuple[list[tuple[str, bool]], dict[str, Any] | None, str | None]:
    """Train then evaluate one job, in the process (and on the node) Ray runs it in.
    When the output root is on S3 the job works in a staging folder of its own, made for
    it in this process's temporary folder (the driver's may not exist on this node) and
    removed whole at the end, and sends its work back also when a stage fails. With
    ``progress_queue`` (the command's :class:`~nsa.progress_relay.ProgressRelay` queue),
    the stages' progress is sent there instead of drawn here. Returns the stages passed,
    each with whether it did work; the metrics; and the one-line error that stopped the
    job."""
    with _progress_to(progress_queue, plan):
        passed: list[tuple[str, bool]] = []
        try:
            if config.out_url is None:
                return _stages(config, plan, progress, passed)
            with tempfile.TemporaryDirectory(prefix="nsa-pipeline-job-") as staging:
                plan = replace(plan, job=replace(plan.job,
                                                 directory=Path(staging) / plan.job.name))
                metrics = _done_in_bucket(config.out_url, plan)
                if metrics is not None:
                    return [("train", False), ("evaluate", False)], metrics, None
                fetched = fetch_job(config.out_url, plan.job.name, plan.job.directory)
                try:
                    return _stages(config, plan, progress, passed)
                finally:
                    send_job(config.out_url, plan.job.name, plan.job.directory, fetched)
        except Exception as exc:  # one failed job must not stop the others
            return passed, None, _error_line(exc)


def _stages(config: PipelineConfig, plan: JobPlan, progress: bool,
            passed: list[tuple[str, bool]]
            ) -> tuple[list[tuple[str, bool]], dict[str, Any] | None, None]:
    """Train, then evaluate; each stage passed is appended to ``passed`` as it ends."""
    passed.append(("train", run_train(plan, progress)))
    evaluated, metrics = run_evaluate(config, plan, progress)
    passed.append(("evaluate", evaluated))
    return passed, metrics, None


def _done_in_bucket(url: str, plan: JobPlan) -> dict[str, Any] | None:
    """The metrics of a job whose training and evaluation are both done in the bucket at
    ``url`` with these settings, or None. The done-checks of ``run_train`` and
    ``run_evaluate``, made on the markers and the names of the run's files, so that a
    re-run with nothing to do copies down no model (tens of MB a job)."""
    job_dir = plan.job.directory
    fetch_job(url, plan.job.name, job_dir, outputs=False)
    trained = stage_state(job_dir, "train", plan.hashes["train"],
                          output_id(job_dir, "generate"))
    evaluated = stage_state(job_dir, "evaluate", plan.hashes["evaluate"],
                            output_id(job_dir, "train"))
    if trained is not StageState.DONE or evaluated is not StageState.DONE:
        return None
    if not present(url, plan.job.name, [f"run/{MODEL_FILE}", f"run/{CONFIG_FILE}"]):
        return None
    fetch_files(f"{url}/{plan.job.name}", job_dir, [METRICS_JSON])
    return read_metrics(job_dir / METRICS_JSON)


def _generate(config: PipelineConfig, plan: JobPlan, progress: bool) -> bool:
    """Generate the job's store unless done (its marker sent back when the output root is
    on S3); return True when work was done."""
    if config.out_url is None:
        did = run_generate(config, plan, progress)
    else:
        fetched = fetch_job(config.out_url, plan.job.name, plan.job.directory, outputs=False)
        try:
            did = run_generate(config, plan, progress)
        finally:
            send_job(config.out_url, plan.job.name, plan.job.directory, fetched)
    _log(config.out, plan.job.name, "generate", did)
    return did


def _finish(config: PipelineConfig, outcome: JobOutcome,
            result: tuple[list[tuple[str, bool]], dict[str, Any] | None, str | None]) -> None:
    passed, outcome.metrics, outcome.error = result
    for stage, did in passed:
        _log(config.out, outcome.name, stage, did)
        if did:
            outcome.ran.append(stage)


def _run_local(config: PipelineConfig, plan: JobPlan, progress: bool) -> JobOutcome:
    outcome = JobOutcome(plan.job.name, plan.job.category, plan.job.seed)
    try:
        if _generate(config, plan, progress):
            outcome.ran.append("generate")
    except Exception as exc:  # one failed job must not stop the others
        outcome.error = _error_line(exc)
        _ended(outcome)
        return outcome
    _finish(config, outcome, _train_and_evaluate(config, plan, progress))
    _ended(outcome)
    return outcome


def run_pipeline(config: PipelineConfig, *, address: str | None = None,
                 progress: bool = True) -> list[JobOutcome]:
    """Run every job of ``config``; return one outcome per job, in config order.

    The folders and list files the config names are checked first
    (:func:`~nsa.pipelines.config.check_inputs`): a missing one stops the pipeline with a
    :class:`~nsa.pipelines.config.ConfigError` before any job starts. With the output
    root on S3, the pipeline log is fetched first and sent back last
    (:mod:`~nsa.pipelines.remote_out`).
    """
    check_inputs(config)
    plans = [plan_job(config, job) for job in config.jobs()]
    if config.out_url is not None:
        shutil.rmtree(config.out, ignore_errors=True)
    config.out.mkdir(parents=True, exist_ok=True)
    if config.out_url is not None:
        fetch_files(config.out_url, config.out, [LOG_FILE])
    try:
        if address is None:
            return [_run_local(config, plan, progress) for plan in plans]
        with ray_session(address):
            return _run_on_cluster(config, plans, progress)
    finally:
        if config.out_url is not None:
            send_files(config.out_url, config.out, [LOG_FILE])


def _run_on_cluster(config: PipelineConfig, plans: list[JobPlan], progress: bool
                    ) -> list[JobOutcome]:
    """Generate each job's store here, then train and evaluate it as a Ray task. With
    ``progress``, every stage's progress (generation here included, so that one display
    draws it all) goes through one relay, each task labelled with its job's name; a
    job's last progress is drawn before its ``ended:`` line."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    remote = ray.remote(num_gpus=1 if gpus >= 1 else 0, num_cpus=1,
                        max_retries=0)(_train_and_evaluate)
    outcomes, pending = [], {}
    with relayed_progress("examples", progress) as relay:
        queue = relay.queue if relay is not None else None
        for plan in plans:
            outcome = JobOutcome(plan.job.name, plan.job.category, plan.job.seed)
            outcomes.append(outcome)
            try:
                with _progress_to(queue, plan):
                    if _generate(config, plan, progress):
                        outcome.ran.append("generate")
                pending[len(outcomes) - 1] = remote.remote(config, plan, progress, queue)
            except Exception as exc:
                outcome.error = _error_line(exc)
                if relay is not None:  # its generation's last line before its end
                    relay.flush(plan.job.name)
                _ended(outcome)
        waiting = {ref: index for index, ref in pending.items()}
        while waiting:  # in the order the jobs end
            (ref,), _ = ray.wait(list(waiting), num_returns=1)
            index = waiting.pop(ref)
            try:
                _finish(config, outcomes[index], ray.get(ref))
            except Exception as exc:  # the task itself lost (its worker died)
                outcomes[index].error = _lost_task_line(exc)
            if relay is not None:
                relay.flush(plans[index].job.name)
            _ended(outcomes[index])
    return outcomes
