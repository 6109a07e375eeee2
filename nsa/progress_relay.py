"""Progress of work that runs in Ray workers, shown by the command that started it.

The commands start Ray without passing its workers' output on to them (``log_to_driver``
is off: that output is mostly Ray's own), so a progress bar drawn in a worker is seen by
nobody. Instead the worker's stand-in for the bar, :class:`ProgressSender`, puts the
state of each of its tasks on a Ray queue (``ray.util.queue.Queue``, an actor), and the
command, :func:`relayed_progress`, draws every task that arrives, one task of
:func:`nsa.progress.progress_bar` per sender's task, as it draws its own: bars on a
terminal, lines with rate and ETA in a log. Several workers can send at once (the jobs
of a pipeline on a cluster); a task leaves the display, its last state shown, when its
sender stops.

A worker gets senders either by name (``ProgressSender(queue)``) or, for code that draws
its progress with :func:`~nsa.progress.progress_bar`, with :func:`sending_progress`.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import Progress, TaskID

from nsa.progress import end_task, progress_bar, progress_redirected

#: Seconds between two states a worker sends for a task (besides its first and last).
SEND_INTERVAL_S = 0.5
#: Seconds the command waits for a state before it checks whether the work has ended.
POLL_S = 0.5
#: Seconds :meth:`ProgressRelay.flush` waits at most for the relay to catch up.
FLUSH_TIMEOUT_S = 10.0
#: The key of the command's own marker on the queue (see :meth:`ProgressRelay.flush`).
_FLUSH = "flush"


class ProgressSender:
    """What a worker uses in place of :func:`~nsa.progress.progress_bar`: ``start``,
    ``stop``, ``add_task``, ``update``, ``advance``, ``disable`` and ``with`` (as rich's
    ``Progress`` takes them) put each task's state on ``queue``, a dict of ``key`` (the
    sender's task, unique across workers), ``label``, ``description`` (after ``label``,
    when given), ``total``, ``completed``, ``unit`` and ``ended``; a task's first and last
    state always, the others at most every :data:`SEND_INTERVAL_S`. Nothing is sent
    while ``disable`` is true."""

    def __init__(self, queue: Any, label: str = "", unit: str = "examples") -> None:
        self.queue = queue
        self.label = label
        self.unit = unit
        self.disable = False
        self._sender = uuid.uuid4().hex
        self._states: list[dict[str, Any]] = []
        self._sent_at: list[float] = []

    def start(self) -> None:
        """Nothing to start: the command draws."""

    def __enter__(self) -> ProgressSender:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def add_task(self, description: str, total: float | None = None,
                 completed: float = 0, **_: Any) -> int:
        task = len(self._states)
        self._states.append({"key": f"{self._sender}/{task}", "label": self.label,
                             "description": self._labelled(description), "total": total,
                             "completed": completed, "unit": self.unit, "ended": False})
        self._sent_at.append(-math.inf)
        self._send(task, force=True)
        return task

    def update(self, task: int, *, completed: float | None = None,
               advance: float | None = None, total: float | None = None,
               description: str | None = None, **_: Any) -> None:
        state = self._states[task]
        if completed is not None:
            state["completed"] = completed
        if advance is not None:
            state["completed"] += advance
        if total is not None:
            state["total"] = total
        if description is not None:
            state["description"] = self._labelled(description)
        self._send(task)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def stop(self) -> None:
        """Send each task's last state, marked ended (once)."""
        for task in range(len(self._states)):
            self.end(task)

    def end(self, task: int) -> None:
        """Send ``task``'s last state, marked ended (once)."""
        state = self._states[task]
        if not state["ended"]:
            state["ended"] = True
            self._send(task, force=True)

    def _labelled(self, description: str) -> str:
        return f"{self.label} {description}" if self.label else description

    def _send(self, task: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.disable and (force or now - self._sent_at[task] >= SEND_INTERVAL_S):
            self.queue.put(dict(self._states[task]))
            self._sent_at[task] = now


@contextmanager
def sending_progress(queue: Any, label: str) -> Iterator[None]:
    """In the body, :func:`~nsa.progress.progress_bar` makes a :class:`ProgressSender`
    to ``queue`` instead of a bar, each task's description after ``label`` (a job's
    name, say)."""
    with progress_redirected(lambda unit: ProgressSender(queue, label, unit)):
        yield


class ProgressRelay:
    """The command's end of the queue: :attr:`queue` to hand to the workers; each task
    whose states arrive on it is drawn as one task of a :func:`progress_bar` (``unit``
    for states without one), added at its first state and ended
    (:func:`~nsa.progress.end_task`) at its last. Only its own thread draws."""

    def __init__(self, unit: str) -> None:
        from ray.util.queue import Queue

        # first: it refuses a wrong NSA_PROGRESS_INTERVAL before the queue exists
        self.bar: Progress | ProgressSender = progress_bar(unit)
        self.queue = Queue(actor_options={"num_cpus": 0})  # never waits for a free CPU
        self.unit = unit
        self._started = False
        self._tasks: dict[str, TaskID] = {}  # sender's key -> the bar's task
        self._labels: dict[str, str | None] = {}  # sender's key -> its sender's label
        self._flushed = threading.Event()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="nsa-progress-relay",
                                        daemon=True)

    def flush(self, label: str | None = None) -> None:
        """Return once every state put on the queue before this call has been drawn
        (a job's last, before the command says the job ended), or after
        :data:`FLUSH_TIMEOUT_S`; then, with ``label``, take the tasks of that label still
        shown off the display without a last line (those of a job whose worker died:
        their senders never sent their last state, and drawing it again after the job's
        ``ended:`` line would say it still runs). Call it from one thread only."""
        self._flushed.clear()
        self.queue.put({_FLUSH: True, "label": label})
        self._flushed.wait(FLUSH_TIMEOUT_S)

    def _show(self, state: dict[str, Any]) -> None:
        if _FLUSH in state:
            if state.get("label") is not None:
                for key in [key for key, label in self._labels.items()
                            if label == state["label"]]:
                    self._take_off(key, last_line=False)
            self._flushed.set()
            return
        key = state["key"]
        if key not in self._tasks:
            if not self._started:
                self.bar.start()
                self._started = True
            self._tasks[key] = self.bar.add_task(
                state["description"], total=state["total"], completed=state["completed"],
                unit=state.get("unit", self.unit))
            self._labels[key] = state.get("label")
        else:
            self.bar.update(self._tasks[key], description=state["description"],
                            total=state["total"], completed=state["completed"])
        if state.get("ended"):
            self._take_off(key, last_line=True)

    def _take_off(self, key: str, last_line: bool) -> None:
        """Take sender task ``key`` off the display, drawing its last state once when
        ``last_line`` (in a worker's relay, its end is sent on either way)."""
        task = self._tasks.pop(key)
        del self._labels[key]
        if isinstance(self.bar, ProgressSender):
            self.bar.end(task)
        elif last_line:
            end_task(self.bar, task)
        else:
            self.bar.remove_task(task)

    def _relay(self) -> None:
        from ray.util.queue import Empty

        while not self._ended.is_set():
            try:
                self._show(self.queue.get(timeout=POLL_S))
            except Empty:
                continue

    def _start(self) -> None:
        self._thread.start()

    def _end(self) -> None:
        self._ended.set()
        self._thread.join()
        while not self.queue.empty():  # what arrived since the relay's last look
            self._show(self.queue.get_nowait())
        if self._started:
            self.bar.stop()  # tasks whose senders never stopped: their last state
        self.queue.shutdown()


@contextmanager
def relayed_progress(unit: str, enabled: bool = True) -> Iterator[ProgressRelay | None]:
    """In the body, the :class:`ProgressRelay` whose ``queue`` the workers' senders put
    their states on (None when not ``enabled``); what arrives is drawn until the body
    ends, the last states included. Needs a Ray session for the whole body."""
    if not enabled:
        yield None
        return
    relay = ProgressRelay(unit)
    relay._start()
    try:
        yield relay
    finally:
        relay._end()
