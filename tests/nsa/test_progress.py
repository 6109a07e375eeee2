"""Progress: rich's bar on a terminal, plain timed lines in a log (a file, a pipe)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_scripts import bench_script
from nsa.generate.cli import app
from rich.console import Console
from typer.testing import CliRunner

from nsa.errors import UserError
from nsa.progress import (
    DEFAULT_INTERVAL,
    ProgressLog,
    progress_bar,
    progress_interval,
    terminal_bar,
)

BIN = Path(sys.executable).parent


class Clock:
    """A clock that moves only when told (rich's Progress takes one as ``get_time``)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """What rich takes for a terminal: a stream whose ``isatty`` says so."""

    def isatty(self) -> bool:
        return True


def _log(interval: float = 10.0) -> tuple[ProgressLog, Clock, io.StringIO]:
    """A ProgressLog on a file-like stream, driven by hand: a fake clock and no refresh
    thread (each ``refresh()`` is a tick of rich's thread)."""
    clock, stream = Clock(), io.StringIO()
    bar = ProgressLog("examples", interval, Console(file=stream), get_time=clock,
                      auto_refresh=False)
    return bar, clock, stream


def _step(bar: ProgressLog, task, clock: Clock, at: float, n: int = 10) -> None:
    clock.now = at
    bar.advance(task, n)
    bar.refresh()


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_log_gets_a_line_with_rate_and_eta_while_the_task_advances():
    bar, clock, stream = _log(interval=10)
    bar.start()
    task = bar.add_task("generating", total=100)
    bar.refresh()
    assert _lines(stream) == []  # no progress yet
    _step(bar, task, clock, at=1)  # the first progress: a line at once, rate still unknown
    assert _lines(stream) == [
        "generating: 10/100 examples (10.0%)  - examples/s  elapsed 0:00:01  ETA -:--:--"]
    _step(bar, task, clock, at=2)
    _step(bar, task, clock, at=10.9)
    assert len(_lines(stream)) == 1  # not yet 10 s since the first
    _step(bar, task, clock, at=11)  # 20 more examples in the 10 s since the first sample
    assert _lines(stream)[1:] == [
        "generating: 40/100 examples (40.0%)  3.0 examples/s  elapsed 0:00:11  ETA 0:00:20"]
    bar.stop()


def test_lines_never_come_more_often_than_the_interval_and_the_last_one_comes_at_the_end():
    bar, clock, stream = _log(interval=10)
    bar.start()
    task = bar.add_task("verifying", total=1200)
    for tick in range(1, 121):  # one step every 0.5 s for 60 s, a refresh after each
        _step(bar, task, clock, at=tick / 2)
    elapsed = [line.split("elapsed ")[1].split()[0] for line in _lines(stream)]
    assert elapsed == ["0:00:00", "0:00:10", "0:00:20", "0:00:30", "0:00:40", "0:00:50"]
    clock.now = 60.2
    bar.stop()  # the last line, although the one before is only 9.7 s old
    assert _lines(stream)[-1] == (
        "verifying: 1,200/1,200 examples (100.0%)  20.0 examples/s  elapsed 0:01:00  "
        "ETA 0:00:00")
    assert len(_lines(stream)) == 7
    bar.stop()
    assert len(_lines(stream)) == 7  # stopped once, one last line


def test_a_task_without_progress_gets_a_line_after_the_interval():
    bar, clock, stream = _log(interval=10)
    bar.start()
    bar.add_task("generating", total=100)
    clock.now = 9.9
    bar.refresh()
    assert _lines(stream) == []
    clock.now = 10
    bar.refresh()
    assert _lines(stream) == [
        "generating: 0/100 examples (0.0%)  - examples/s  elapsed 0:00:10  ETA -:--:--"]
    bar.stop()


def test_the_line_shows_the_description_as_updated_and_a_resumed_start():
    """The trainer puts the loss in the description and starts at the resumed step."""
    bar, clock, stream = _log(interval=10)
    bar.start()
    task = bar.add_task("training", total=640, completed=320)
    bar.refresh()
    assert _lines(stream) == []  # starting at 320 is no progress
    clock.now = 1
    bar.update(task, description="training loss 0.1234")
    bar.update(task, completed=384)
    bar.refresh()
    assert _lines(stream) == ["training loss 0.1234: 384/640 examples (60.0%)  - examples/s  "
                              "elapsed 0:00:01  ETA -:--:--"]
    bar.stop()


def test_a_task_without_a_total_has_no_percent_and_no_eta():
    bar, clock, stream = _log()
    with bar:
        task = bar.add_task("reading", total=None)
        _step(bar, task, clock, at=1, n=5)
    # the last line at the end would repeat it word for word: left out
    assert _lines(stream) == ["reading: 5 examples  - examples/s  elapsed 0:00:01"]


def test_disabled_progress_writes_nothing():
    """How the commands' --no-progress turns it off."""
    bar, clock, stream = _log()
    bar.disable = True
    with bar:
        task = bar.add_task("generating", total=100)
        for tick in range(1, 30):
            _step(bar, task, clock, at=tick)
    assert stream.getvalue() == ""


def _clean_terminal_environment(monkeypatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


def test_a_terminal_keeps_richs_bar(monkeypatch):
    _clean_terminal_environment(monkeypatch)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("NSA_PROGRESS_INTERVAL", "0.001")
    monkeypatch.setattr(sys, "stderr", Terminal())
    stream = sys.stderr
    with progress_bar("chunks") as bar:
        task = bar.add_task("verifying", total=4)
        for _ in range(4):
            time.sleep(0.01)
            bar.advance(task)
    shown = stream.getvalue()
    assert "━" in shown and "4/4" in shown and "chunks/s" in shown  # the bar, redrawn
    assert "\x1b[" in shown  # with the cursor moves of a redrawn display
    assert "verifying: " not in shown and "elapsed" not in shown


@pytest.mark.parametrize("width", [80, 120])
def test_a_terminal_bar_keeps_each_task_on_one_line_with_its_rate_unit(width):
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    bar = terminal_bar("examples", console)
    bar.add_task("mono/seed0 training loss 0.2381", total=160, completed=160)
    bar.add_task("mono/seed1 evaluating elpv-mono", total=516, completed=32, unit="images")
    console.print(bar.make_tasks_table(bar.tasks))
    lines = console.file.getvalue().splitlines()
    assert len(lines) == 2 and all(len(line) <= width for line in lines)
    assert lines[0].startswith("mono/seed0 training loss 0.2381 ━")  # the loss stays
    assert re.search(r" 160/160 - examples/s +0:00:00 ETA -:--:--$", lines[0])
    assert re.search(r" 32/516 - images/s +0:00:00 ETA -:--:--$", lines[1])


def test_a_rate_and_an_eta_wait_for_samples_over_5_s():
    """Two workers finishing their first shards together are not a rate (the demo's first
    line said 23,777 examples/s), nor is a slow start."""
    bar, clock, stream = _log(interval=1)
    bar.start()
    task = bar.add_task("generating", total=16_000)
    _step(bar, task, clock, at=1.00, n=448)
    _step(bar, task, clock, at=1.02, n=448)
    _step(bar, task, clock, at=5.9, n=896)
    assert all("- examples/s" in line and "ETA -:--:--" in line for line in _lines(stream))
    _step(bar, task, clock, at=7.0, n=448)  # 1,792 examples in the 6 s since the first
    assert _lines(stream)[-1] == ("generating: 2,240/16,000 examples (14.0%)  298.7 "
                                  "examples/s  elapsed 0:00:07  ETA 0:00:47")
    bar.stop()


def test_a_task_that_ends_within_5_s_has_no_rate_at_the_end():
    """Its last line said 1,529.2 examples/s for 512 examples made in 1 to 2 s."""
    bar, clock, stream = _log(interval=1)
    bar.start()
    task = bar.add_task("generating", total=512)
    _step(bar, task, clock, at=1.0, n=256)
    _step(bar, task, clock, at=1.2, n=256)
    bar.stop()
    assert _lines(stream)[-1] == ("generating: 512/512 examples (100.0%)  - examples/s  "
                                  "elapsed 0:00:01  ETA 0:00:00")


def test_a_terminal_bar_is_redrawn_twice_a_second(monkeypatch):
    _clean_terminal_environment(monkeypatch)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(sys, "stderr", Terminal())
    stream = sys.stderr
    with progress_bar("chunks") as bar:
        task = bar.add_task("verifying", total=150)
        for _ in range(150):  # 1.5 s, advancing every 10 ms
            time.sleep(0.01)
            bar.advance(task)
    drawn = stream.getvalue().count("verifying")
    assert 2 <= drawn <= 6  # 3 redraws and the last; rich's default would draw ~15


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()], ids=["file", "dumb-terminal"])
def test_a_file_or_a_dumb_terminal_gets_lines_from_richs_refresh_thread(monkeypatch, stream):
    """No clock of our own and no refresh by hand: rich's thread writes the lines."""
    _clean_terminal_environment(monkeypatch)
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("NSA_PROGRESS_INTERVAL", "0.05")
    monkeypatch.setattr(sys, "stderr", stream)
    with progress_bar("chunks") as bar:
        task = bar.add_task("verifying", total=1000)
        deadline = time.monotonic() + 10
        while len(_lines(stream)) < 3 and time.monotonic() < deadline:
            bar.advance(task)
            time.sleep(0.01)
        during = _lines(stream)
        assert len(during) >= 3, during  # written while it runs, not only at the end
        bar.advance(task)  # so that the last line says something new
    assert all(line.startswith("verifying: ") and "chunks/s  elapsed" in line
               for line in _lines(stream))
    final = _lines(stream)  # and the last one at the end, with the last advance
    assert len(final) > len(during) and final[-1] != during[-1]
    assert "━" not in stream.getvalue() and "\x1b" not in stream.getvalue()


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "10s"])
def test_a_wrong_interval_is_a_user_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("NSA_PROGRESS_INTERVAL", value)
    with pytest.raises(UserError, match=f"NSA_PROGRESS_INTERVAL='{value}'"):
        progress_interval()
    with pytest.raises(UserError, match="NSA_PROGRESS_INTERVAL"):
        progress_bar()


def test_the_interval_defaults_to_30_s_and_takes_fractions(monkeypatch):
    monkeypatch.delenv("NSA_PROGRESS_INTERVAL", raising=False)
    assert progress_interval() == DEFAULT_INTERVAL == 30
    monkeypatch.setenv("NSA_PROGRESS_INTERVAL", "")
    assert progress_interval() == 30
    monkeypatch.setenv("NSA_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5


def test_nsa_gen_verify_writes_progress_lines_into_a_log_file(tmp_path, monkeypatch):
    """A real command with stderr redirected to a file, as ``nohup ... 2>log`` does; and
    the same command with --no-progress or a wrong interval (in process: CliRunner's
    stderr is no terminal either)."""
    store = bench_script("store_scaling").write_synthetic_store(tmp_path / "s.zarr", 200, 16)
    _clean_terminal_environment(monkeypatch)
    monkeypatch.setenv("NSA_PROGRESS_INTERVAL", "0.5")
    log = tmp_path / "log"
    with open(log, "w") as handle:
        done = subprocess.run([str(BIN / "nsa-gen"), "verify", str(store)],
                              stdout=subprocess.DEVNULL, stderr=handle, check=False)
    assert done.returncode == 0, log.read_text()
    lines = log.read_text().splitlines()
    assert lines[-1].startswith("verifying: 4/4 chunks (100.0%)  "), lines
    assert " chunks/s  elapsed 0:00:0" in lines[-1] and lines[-1].endswith("  ETA 0:00:00")
    assert "━" not in log.read_text()

    quiet = CliRunner().invoke(app, ["verify", str(store), "--no-progress"])
    assert (quiet.exit_code, quiet.stderr) == (0, "")
    monkeypatch.setenv("NSA_PROGRESS_INTERVAL", "soon")
    wrong = CliRunner().invoke(app, ["verify", str(store)])
    assert (wrong.exit_code, wrong.stderr) == (2, (
        "error: NSA_PROGRESS_INTERVAL='soon': give the seconds between two progress lines, "
        "a number above 0\n"))
