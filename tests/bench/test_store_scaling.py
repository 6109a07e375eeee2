"""bench/store_scaling.py at tiny sizes: it writes sound stores and prints one row per size
(the timings themselves are the benchmark's business, not a test's)."""

from __future__ import annotations

from bench_scripts import bench_script
from nsa.generate import shards


def test_synthetic_store_is_complete_sound_and_in_the_default_layout(tmp_path):
    path = bench_script("store_scaling").write_synthetic_store(tmp_path / "s.zarr", 200, 32)
    store = shards.open_store(path)
    assert (store.n, store.n_chunks, store.n_shards) == (200, 4, 4)
    assert shards.verify_store(path) == 4
    files, size = bench_script("store_scaling").files_and_bytes(path)
    assert files == 9 + 8 * 4 and size > 0


def test_main_prints_one_row_per_size_with_every_tool_and_its_ratio(tmp_path, capsys):
    bench_script("store_scaling").main(["--base", "64", "--factors", "1", "2", "--size", "32",
                                        "--repeats", "1", "--work", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[:6] == ["n", "chunks", "shards", "files", "MB", "read"]
    rows = [line.split() for line in lines[2:]]
    assert [row[:3] for row in rows] == [["64", "1", "1"], ["128", "2", "2"]]
    assert all(len(row) == 12 and row[7].endswith("x)") for row in rows)
    assert list(tmp_path.iterdir()) == []  # its stores are removed
