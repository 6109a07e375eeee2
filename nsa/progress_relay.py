"""Progress of work that runs in a Ray worker, shown by the command that started it.

The commands start Ray without passing its workers' output on to them (``log_to_driver``
is off: that output is mostly Ray's own), so a progress bar drawn in a worker is seen by
nobody. Instead the worker's stand-in for the bar, :class:`ProgressSender`, puts its
task's state on a Ray queue (``ray.util.queue.Queue``, an actor), and the command,
:func:`relayed_progress`, draws it with :func:`nsa.progress.progress_bar` as it draws its
own: a bar on a terminal, lines with rate and ETA in a log.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nsa.progress import progress_bar

#: Seconds between two states a worker sends (besides the first and the last).
SEND_INTERVAL_S = 0.5
#: Seconds the command waits for a state before it checks whether the work has ended.
POLL_S = 0.5


class ProgressSender:
    """What a worker uses in place of :func:`~nsa.progress.progress_bar`, for one task:
    ``add_task``, ``update`` and ``stop`` (as rich's ``Progress`` takes them) put the
    task's state, a dict of ``description``, ``total`` and ``completed``, on ``queue``;
    the first and the last always, the others at most every :data:`SEND_INTERVAL_S`."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.state: dict[str, Any] | None = None
        self._sent_at = -math.inf

    def start(self) -> None:
        """Nothing to start: the command draws."""

    def add_task(self, description: str, total: float | None = None,
                 completed: float = 0, **_: Any) -> int:
        self.state = {"description": description, "total": total, "completed": completed}
        self._send(force=True)
        return 0

    def update(self, task: int, *, completed: float | None = None,
               description: str | None = None, **_: Any) -> None:
        if self.state is None:
            return
        if completed is not None:
            self.state["completed"] = completed
        if description is not None:
            self.state["description"] = description
        self._send()

    def stop(self) -> None:
        if self.state is not None:
            self._send(force=True)

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._sent_at >= SEND_INTERVAL_S:
            self.queue.put(dict(self.state or {}))
            self._sent_at = now


@contextmanager
def relayed_progress(unit: str, enabled: bool = True) -> Iterator[Any]:
    """In the body, the queue to hand to a worker's :class:`ProgressSender` (None when
    not ``enabled``); the states that arrive on it are drawn as one task of
    :func:`~nsa.progress.progress_bar` (``unit``) until the body ends, the last one
    included. Needs a Ray session for the whole body."""
    if not enabled:
        yield None
        return
    from ray.util.queue import Empty, Queue

    queue = Queue(actor_options={"num_cpus": 0})  # never waits for a free CPU
    bar = progress_bar(unit)
    shown: list[Any] = []  # the bar's task, once the first state arrived

    def show(state: dict[str, Any]) -> None:
        if not shown:
            bar.start()
            shown.append(bar.add_task(state["description"], total=state["total"],
                                      completed=state["completed"]))
        else:
            bar.update(shown[0], description=state["description"],
                       completed=state["completed"])

    ended = threading.Event()

    def relay() -> None:
        while not ended.is_set():
            try:
                show(queue.get(timeout=POLL_S))
            except Empty:
                continue

    thread = threading.Thread(target=relay, name="nsa-progress-relay", daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        ended.set()
        thread.join()
        while not queue.empty():  # what arrived since the relay's last look
            show(queue.get_nowait())
        if shown:
            bar.stop()
        queue.shutdown()
