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


def test_store_path_figures_split_a_shards_cpu_into_engine_filling_and_writing(
        monkeypatch, tmp_path):
    generation = bench_script("generation")
    monkeypatch.setattr(generation, "REPEATS", 1)
    monkeypatch.setattr(generation.shards, "DEFAULT_CHUNK_SIZE", 4)
    figures = generation.store_path_cpu("mono", 32, 2, tmp_path)
    assert 0 < figures.engine_ms < 1e3 and 0 < figures.write_ms < 1e3
    assert figures.fill_ms > 0
    store = generation.shards.open_store(tmp_path / "path0.zarr", allow_incomplete=True)
    assert store.n == 8 and store.written_chunks().all()
