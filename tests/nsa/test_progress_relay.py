"""The progress relay: several Ray workers send their progress at once, and the command
draws each sender's task as a task of its own (here a log: plain lines)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from nsa.progress import progress_bar
from nsa.progress_relay import relayed_progress, sending_progress


def _wait_for(*paths: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        assert time.monotonic() < deadline, f"waited {timeout} s for {paths}"
        time.sleep(0.05)


def test_two_workers_sending_at_once_are_two_tasks_each_with_its_last_state(
        local_ray, tmp_path, capfd):
    import ray

    go = tmp_path / "go"

    @ray.remote(num_cpus=1)
    def count(queue, label: str, unit: str, total: int) -> None:
        """Count to ``total`` with a progress_bar, as the stages draw theirs, once both
        workers have started (their tasks both on the command's display)."""
        with sending_progress(queue, label):
            bar = progress_bar(unit)
            bar.start()
            task = bar.add_task("counting", total=total)
            (tmp_path / f"{unit}.started").touch()
            deadline = time.monotonic() + 30
            while not go.exists() and time.monotonic() < deadline:  # (this module is
                time.sleep(0.05)  # not importable in a worker: nothing of it used here)
            for _ in range(total):
                bar.advance(task)
            bar.stop()

    with relayed_progress("examples") as relay:
        refs = [count.remote(relay.queue, "bottle/seed0", "examples", 8),
                count.remote(relay.queue, "zipper/seed1", "images", 12)]
        _wait_for(tmp_path / "examples.started", tmp_path / "images.started")
        deadline = time.monotonic() + 10
        while len(relay.bar.tasks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(task.description for task in relay.bar.tasks) == [
            "bottle/seed0 counting", "zipper/seed1 counting"]
        go.touch()
        ray.get(refs)
        relay.flush()
        assert relay.bar.tasks == []  # each left the display at its last state
        drawn = capfd.readouterr().err.splitlines()
    lasts = [line for line in drawn if "(100.0%)" in line]
    assert sorted(line.split("  ")[0] for line in lasts) == [
        "bottle/seed0 counting: 8/8 examples (100.0%)",
        "zipper/seed1 counting: 12/12 images (100.0%)"]
    assert all(line.endswith("ETA 0:00:00") for line in lasts)
    assert capfd.readouterr().err.strip() == ""  # the relay's end repeats nothing


def test_a_job_whose_sender_never_ended_is_taken_off_without_a_line_after_it(
        local_ray, capfd):
    """A worker that dies never sends its task's last state: flushing the job's label
    takes the task off, so that nothing of the job is drawn after its ``ended:`` line."""
    import ray

    @ray.remote(num_cpus=1, max_retries=0)
    def dies(queue) -> None:
        with sending_progress(queue, "lost/seed0"):
            bar = progress_bar("examples")
            task = bar.add_task("training", total=10)
            bar.update(task, completed=3)
            raise RuntimeError("the worker died")  # before the bar's stop

    with relayed_progress("examples") as relay:
        with pytest.raises(ray.exceptions.RayTaskError):
            ray.get(dies.remote(relay.queue))
        relay.flush("lost/seed0")
        assert relay.bar.tasks == []
        capfd.readouterr()
        print("ended: lost/seed0: FAILED", file=sys.stderr)
    assert capfd.readouterr().err == "ended: lost/seed0: FAILED\n"
