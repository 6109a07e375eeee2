"""Progress with rate and ETA, shared by every stage so that it looks alike.

On a terminal it is rich's bar, redrawn in place. Where rich cannot redraw (stderr is a
file, a pipe or a dumb terminal: batch logs, ``nohup``, ``ray job submit``, CI) it is
plain lines instead, one every ``NSA_PROGRESS_INTERVAL`` seconds (default 30)::

    generating: 12,288/200,000 examples (6.1%)  341.2 examples/s  elapsed 0:00:36  ETA 0:09:10

Work that runs where nobody sees its output (a Ray worker) sends its progress to the
command instead: :func:`progress_redirected` and :mod:`nsa.progress_relay`.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    GetTimeCallable,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from nsa.errors import UserError

#: The environment variable giving the seconds between two progress lines in a log.
INTERVAL_VARIABLE = "NSA_PROGRESS_INTERVAL"

#: Seconds between two progress lines in a log when ``NSA_PROGRESS_INTERVAL`` is not set.
DEFAULT_INTERVAL = 30.0

#: Redraws a second of the bar on a terminal: rich's default of 10 wrote ~300 KB of
#: redraws in a 70 s training (what a terminal recording or a slow SSH link carries); a
#: rate and an ETA do not need more than 2.
TERMINAL_REFRESH_PER_SECOND = 2


#: Seconds that rich's progress samples must span before a rate and an ETA are shown.
#: Over less, a rate is one burst or one stall: the first progress line of the ELPV demo
#: said 23,777 examples/s (2 workers finishing their first shards together; the run made
#: ~600), and a training from S3 a few examples/s (the loader processes still starting).
MIN_SPEED_SPAN = 5.0


def task_speed(task: Task) -> float | None:
    """Completed units per second, averaged by rich over its recent samples (the last
    30 s); the speed at the end for a finished task; None while, or when at the end, the
    samples span less than ``MIN_SPEED_SPAN`` seconds."""
    samples = task._progress  # rich's own samples, the ones its speed averages
    if len(samples) < 2 or samples[-1].timestamp - samples[0].timestamp < MIN_SPEED_SPAN:
        return None
    return task.finished_speed or task.speed


def time_remaining(task: Task) -> str:
    """The ETA as ``H:MM:SS`` at :func:`task_speed`, ``-:--:--`` while unknown."""
    if task.finished:
        return "0:00:00"
    speed = task_speed(task)
    if not speed or task.remaining is None:
        return "-:--:--"
    minutes, seconds = divmod(math.ceil(task.remaining / speed), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def task_unit(task: Task, default: str) -> str:
    """The task's own unit (its ``unit`` field, as a relayed task has), else ``default``."""
    return str(task.fields.get("unit", default))


class RemainingColumn(ProgressColumn):
    """:func:`time_remaining`."""

    def render(self, task: Task) -> Text:
        return Text(time_remaining(task), style="progress.remaining")


class RateColumn(ProgressColumn):
    """Completed units per second (:func:`task_speed`), ``- unit/s`` while unknown."""

    def __init__(self, unit: str, table_column: Column | None = None) -> None:
        super().__init__(table_column)
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task_speed(task)
        unit = task_unit(task, self.unit)
        return Text(f"{'-' if speed is None else f'{speed:,.1f}'} {unit}/s")


def progress_interval() -> float:
    """Seconds between two progress lines in a log: ``NSA_PROGRESS_INTERVAL`` when set
    (any number above 0), else :data:`DEFAULT_INTERVAL`.

    Raises UserError (exit 2) naming the variable for any other value.
    """
    value = os.environ.get(INTERVAL_VARIABLE, "")
    if not value.strip():
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"{INTERVAL_VARIABLE}={value!r}: give the seconds between two "
                        "progress lines, a number above 0")
    return seconds


class _Ticks(Live):
    """rich's Live, less the drawing: each refresh (rich's refresh thread calls it
    ``refresh_per_second`` times a second, :meth:`Live.stop` once more after the display
    stopped) calls ``on_refresh(final)`` instead, ``final`` True for that last one."""

    def __init__(self, on_refresh: Callable[[bool], None], console: Console,
                 auto_refresh: bool) -> None:
        super().__init__(console=console, auto_refresh=auto_refresh, transient=True,
                         redirect_stdout=False, redirect_stderr=False)
        self._on_refresh = on_refresh

    def refresh(self) -> None:
        self._on_refresh(not self.is_started)


class ProgressLog(Progress):
    """A :class:`~rich.progress.Progress` that writes plain lines for a log instead of a
    bar, one per visible task (:meth:`line`): at the first progress any task makes (or
    ``interval`` seconds after a task started, if none made any), then at most one every
    ``interval`` seconds of ``get_time`` (rich's clock by default), and a last one when
    it stops, whenever that is (unless it would repeat the previous one word for word).
    Whether a line is due is checked at each refresh: rich's refresh thread
    (``auto_refresh``, the only thread) calls it 4 times a second.

    Tasks are added, advanced and updated as with rich's Progress; ``disable`` silences
    it as it does rich's.
    """

    def __init__(self, unit: str, interval: float, console: Console,
                 get_time: GetTimeCallable | None = None, auto_refresh: bool = True) -> None:
        super().__init__(console=console, get_time=get_time, auto_refresh=False)
        self.live = _Ticks(self._refreshed, console, auto_refresh)  # for the Live it made
        self.unit = unit
        self.interval = interval
        self._lock_lines = threading.Lock()
        self._initial: dict[TaskID, float] = {}  # each task's completed when added
        self._written_at: float | None = None  # get_time() of the last lines
        self._last_lines: list[str] = []

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0,
                 completed: int = 0, visible: bool = True, **fields: Any) -> TaskID:
        task_id = super().add_task(description, start=start, total=total,
                                   completed=completed, visible=visible, **fields)
        self._initial[task_id] = completed
        return task_id

    def stop(self) -> None:
        """Stop, writing the last lines (rich's Progress adds an empty line in a log)."""
        if not self.disable:
            self.live.stop()

    def line(self, task: Task) -> str:
        """``description: done/total unit (percent)  rate unit/s  elapsed H:MM:SS  ETA
        H:MM:SS``; without a total, no percent and no ETA. Rate and ETA come from rich's
        samples (:func:`task_speed`, :func:`time_remaining`), ``-`` while unknown; the
        unit is the task's own when it has one (:func:`task_unit`)."""
        speed = task_speed(task)
        rate = "-" if speed is None else f"{speed:,.1f}"
        unit = task_unit(task, self.unit)
        done = f"{task.completed:,.0f}"
        if task.total is None:
            done += f" {unit}"
        else:
            done += f"/{task.total:,.0f} {unit} ({task.percentage:.1f}%)"
        parts = [f"{task.description}: {done}", f"{rate} {unit}/s",
                 f"elapsed {TimeElapsedColumn().render(task).plain}"]
        if task.total is not None:
            parts.append(f"ETA {time_remaining(task)}")
        return "  ".join(parts)

    def write_last(self, task: Task) -> None:
        """Write ``task``'s line now (its last, before it leaves the display)."""
        with self._lock_lines:
            self._write(self.line(task))

    def _write(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def _progressed(self, task: Task) -> bool:
        return task.id in self._initial and task.completed != self._initial[task.id]

    def _refreshed(self, final: bool) -> None:
        with self._lock_lines:
            now = self.get_time()
            tasks = [task for task in self.tasks if task.visible]
            if self._written_at is None:
                due = any(self._progressed(task) or (task.elapsed or 0) >= self.interval
                          for task in tasks)
            else:
                due = now - self._written_at >= self.interval
            if not (due or final):
                return
            lines = [self.line(task) for task in tasks]
            if final and lines == self._last_lines:  # the last lines said it all
                return
            self._written_at, self._last_lines = now, lines
            for line in lines:
                self._write(line)


#: What :func:`progress_bar` returns instead of a bar in this context, when set.
_REDIRECT: ContextVar[Callable[[str], Any] | None] = ContextVar("nsa_progress_redirect",
                                                                default=None)


@contextmanager
def progress_redirected(make: Callable[[str], Any]) -> Iterator[None]:
    """In the body (in this thread, or this Ray task), :func:`progress_bar` ``(unit)``
    returns ``make(unit)``: an object taking the calls the stages make on a bar
    (``start``, ``stop``, ``add_task``, ``update``, ``advance``, ``disable``, ``with``),
    such as :class:`nsa.progress_relay.ProgressSender`, which sends them to the command
    that draws them."""
    token = _REDIRECT.set(make)
    try:
        yield
    finally:
        _REDIRECT.reset(token)


def end_task(progress: Progress, task_id: TaskID) -> None:
    """Show task ``task_id`` once more as it is now, its last state (a line in a log, its
    row printed above the bars on a terminal), and take it off the display: for a task
    that ends while the others go on."""
    task = next(task for task in progress.tasks if task.id == task_id)
    if not progress.disable:
        if isinstance(progress, ProgressLog):
            progress.write_last(task)
        else:
            progress.console.print(progress.make_tasks_table([task]))
    progress.remove_task(task_id)


def progress_bar(unit: str = "examples") -> Progress:
    """Progress on stderr showing done/total, rate in ``unit``/s, elapsed time and ETA:
    rich's bar on a terminal, else plain lines (:class:`ProgressLog`) at the interval of
    :func:`progress_interval`.

    Put changing figures (a loss, say) in the task description with ``update``; a task
    added with a ``unit`` field counts in that unit. Writing to stderr keeps stdout clean
    for the tables the commands print. Raises UserError for a wrong
    ``NSA_PROGRESS_INTERVAL``, terminal or not. Inside :func:`progress_redirected`,
    what that makes instead (neither drawn nor checked here).
    """
    redirect = _REDIRECT.get()
    if redirect is not None:
        return redirect(unit)
    interval = progress_interval()
    console = Console(file=sys.stderr)
    if not console.is_interactive:  # a file, a pipe or TERM=dumb: rich would not redraw
        return ProgressLog(unit, interval, console)
    return terminal_bar(unit, console)


def terminal_bar(unit: str, console: Console) -> Progress:
    """rich's bars on ``console`` (a terminal): description, bar, done/total, rate, elapsed
    time, ETA. Each task keeps one line: the bar takes what the line leaves (at least 5
    columns) and the figures never wrap, so that on an 80-column terminal a long
    description (a job's name and a loss) shrinks the bar, not the rate's unit."""
    fixed = {"table_column": Column(no_wrap=True)}
    return Progress(
        TextColumn("[bold]{task.description}",
                   table_column=Column(no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=5)),
        MofNCompleteColumn(**fixed),
        RateColumn(unit, **fixed),
        TimeElapsedColumn(**fixed),
        TextColumn("ETA", **fixed),
        RemainingColumn(**fixed),
        console=console,
        refresh_per_second=TERMINAL_REFRESH_PER_SECOND,
        expand=True,
    )
