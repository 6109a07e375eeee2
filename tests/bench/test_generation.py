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
    monkeypatch.setattr(generation, "REPEATS", 2)
    monkeypatch.setattr(generation.shards, "DEFAULT_CHUNK_SIZE", 4)
    figures = generation.store_path_cpu("mono", 32, 2, tmp_path)
    assert 0 < figures.engine_ms < 1e3 and 0 < figures.write_ms < 1e3
    assert figures.fill_ms > 0
    store = generation.shards.open_store(tmp_path / "path.zarr", allow_incomplete=True)
    assert store.n == 16 and store.written_chunks().all()  # one shard per repeat


def test_rounds_across_a_change_of_machine_speed_are_left_out_of_the_figures():
    generation = bench_script("generation")
    Round = generation.Round
    rounds = [Round(180.0, 100.0, 100.0, 5.0, 0.5, 4.5),  # 90% of 2x, steady
              Round(150.0, 100.0, 70.0, 5.0, 0.5, 4.5),  # the machine slowed down: left out
              Round(170.0, 100.0, 98.0, 5.0, 0.5, 4.5)]  # 86%, steady
    assert [r.steady for r in rounds] == [True, False, True]
    line = generation.summarise(rounds, 2)
    assert "88% of 2x the engine (median of 2 steady rounds of 3" in line
    assert "90%, 88%*, 86%" in line and "engine CPU / generation CPU 82%" in line
    unsteady = generation.summarise(rounds[1:2], 2)
    assert "NO steady round of 1" in unsteady and "88% of 2x" in unsteady


def test_the_engine_share_is_counted_inside_nsa_gens_own_tasks(monkeypatch, tmp_path):
    generation = bench_script("generation")
    monkeypatch.setattr(generation.shards, "DEFAULT_CHUNK_SIZE", 4)
    settings = generation.resolve_settings("elpv", {"size": 32})
    sources = generation.prepare_sources(
        generation.load_images(generation.elpv_source("mono").files[:8], 32), settings)
    generation.shards.create_store(tmp_path / "c.zarr", n=16, height=32, width=32,
                                   channels=1, chunk_size=4, attrs={}, shard_chunks=2)
    store = generation.shards.open_store(tmp_path / "c.zarr", allow_incomplete=True,
                                         mode="r+")
    with generation.ray_session(None, 1):
        share = generation.counted_engine_share(store, sources, settings)
    assert 0 < share < 1
    assert store.written_chunks().all()  # the real tasks wrote every shard
