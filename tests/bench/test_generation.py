"""bench/generation.py's parallel engine baseline (the timed Ray runs are the benchmark's
business)."""

from __future__ import annotations

import math

import pytest
from bench_scripts import bench_script


def test_parallel_engine_gives_a_rate_and_cpu_per_example(monkeypatch):
    generation = bench_script("generation")
    monkeypatch.setattr(generation, "REPEATS", 1)
    rate, cpu_ms = generation.parallel_engine_rate("mono", 32, 3, 2)
    assert math.isfinite(rate) and rate > 0
    assert 0 < cpu_ms < 1e3


def test_a_failing_engine_process_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="engine process failed"):
        bench_script("generation").parallel_engine_rate("no-such-type", 32, 3, 2)
