"""How much faster the shard loader feeds examples than the model consumes them (CPU).

Measures, in one run on this machine:

1. loader alone, one DataLoader worker process (torch uses one thread there): read whole
   chunks of a 256x256 store, check them, shuffle and augment (the ``bottle`` preset's
   +-5 deg rotation, centre crop 230, random crop 224: the most expensive augmentation),
   no model; as examples/s per worker, and its ratio to the NSA authors' on-the-fly
   generation (36 examples/s per core, their best setting);
2. the same with 2 DataLoader processes (total examples/s), and one worker on a grey
   256 px store with the ``elpv`` preset's flips (no rotation);
3. training alone (forward, backward, Adam step) on random batches at 128 and 256 px
   with 2 CPU threads;
4. the ratio loader / training at 256 (the loader is not the bottleneck when >> 1).

Run: ``.venv/bin/python bench/training.py`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from nsa.generate import shards
from nsa.generate.presets import resolve_settings
from nsa.train.data import ShardStream, make_loader, open_training_stores
from nsa.train.trainer import build_model

AUTHORS_PER_CORE = 36.0  # examples/s per core, the authors' best on-the-fly setting


def write_bench_store(path: Path, n: int, size: int, channels: int, preset: str,
                      shard_chunks: int | None = None) -> Path:
    """A store of smooth random images with a rectangle anomaly (compresses like photos
    more than white noise would); ``shard_chunks`` chunks per shard (default: a new
    store's)."""
    rng = np.random.default_rng(0)
    settings = resolve_settings(preset)
    shards.create_store(path, n=n, height=size, width=size, channels=channels,
                        chunk_size=shards.DEFAULT_CHUNK_SIZE, shard_chunks=shard_chunks,
                        attrs={"preset": preset, "settings": settings, "seed": 0})
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    yy, xx = np.mgrid[0:size, 0:size] / size
    for index in range(store.n_chunks):
        sl = store.chunk_slice(index)
        m = sl.stop - sl.start
        phase = rng.uniform(0, 6.28, (m, 1, 1, 1))
        base = 120 + 60 * np.sin(6 * yy[None, ..., None] + 4 * xx[None, ..., None] + phase)
        images = np.clip(base + rng.normal(0, 6, (m, size, size, channels)), 0, 255)
        labels = np.zeros((m, size, size), np.float32)
        labels[:, size // 4: size // 2, size // 3: size // 2] = 0.8
        store.write_chunk(index, shards.ChunkData(
            images=images.astype(np.uint8),
            masks=np.stack([shards.label_to_mask(lab) for lab in labels]),
            labels=np.ones(m, np.uint8), dest_index=np.zeros(m, np.int32),
            source_index=np.ones(m, np.int32),
            boxes=np.full((m, shards.MAX_PATCHES, 4), -1, np.int16),
            reason=np.zeros(m, np.uint8),
        ))
    store.mark_complete()
    return path


def loader_rate(store: Path, processes: int) -> float:
    """Examples/s of one epoch of the loader alone (decode, verify, shuffle, augment)."""
    dataset = ShardStream(open_training_stores([store]), seed=0, batch_size=64,
                          shuffle_chunks=8, loader_workers=processes)
    dataset.set_epoch(0)
    start, count = time.perf_counter(), 0
    for batch in make_loader(dataset):
        count += len(batch["stacked"])
    return count / (time.perf_counter() - start)


def training_rate(size: int, channels: int, batch: int, steps: int) -> float:
    """Examples/s of forward + backward + Adam on random batches (after one warm-up)."""
    model = build_model(channels, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=generator)
    y = (torch.rand(batch, 1, size, size, generator=generator) > 0.9).float()
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="examples in the 256 px store")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="training batch for timing")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = write_bench_store(Path(tmp) / "bench.zarr", args.n, 256, 3, "bottle")
        one = loader_rate(store, 1)
        two = loader_rate(store, 2)
        elpv = write_bench_store(Path(tmp) / "elpv.zarr", args.n, 256, 1, "elpv")
        one_elpv = loader_rate(elpv, 1)
    torch.set_num_threads(args.threads)
    train_128 = training_rate(128, 3, args.batch, args.steps)
    train_256 = training_rate(256, 3, args.batch, args.steps)
    print(f"loader alone, 256 px RGB, bottle augmentation, {args.n} examples")
    print(f"  1 worker : {one:8.1f} examples/s per worker = "
          f"{one / AUTHORS_PER_CORE:.1f}x the authors' {AUTHORS_PER_CORE:.0f}/s per core")
    print(f"  2 DataLoader processes: {two:8.1f} examples/s in total")
    print(f"  1 worker, 256 px grey, elpv flips only: {one_elpv:8.1f} examples/s = "
          f"{one_elpv / AUTHORS_PER_CORE:.1f}x")
    print(f"training, CPU, {args.threads} threads, batch {args.batch}")
    print(f"  128 px: {train_128:8.2f} examples/s")
    print(f"  256 px: {train_256:8.2f} examples/s")
    print(f"ratio loader (1 worker) / training at 256 px: {one / train_256:.0f}x")
    print("(model input after cropping is 224 in training; timed here at 256 as the issue asks)")


if __name__ == "__main__":
    main()
