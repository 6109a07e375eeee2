"""GPU check: is the trainer input-bound? (issue 7; run through bench/gpu_check.sh).

Measures, in one run on one machine:

1. training examples/s streaming from a pre-computed store (the product's way);
2. the same model's examples/s on one in-memory batch repeated (compute only);
3. their ratio (goal >= 0.9: the loader keeps up);
4. the NSA authors' way: on-the-fly synthesis in DataLoader workers feeding the same
   model and training step;
5. nsa-gen examples/s with 1, 4 and 16 Ray workers.

It prints a table last. Every figure of one row is measured in this run, so the ratios
hold even on a busy machine. On a CPU-only machine it runs too (small sizes, for checking
the script), but its figures then say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# bench/generation.py, beside this script: times nsa-gen's generation phase (Ray tasks
# making, compressing and writing chunks) without Ray's start-up and the image loading.
from generation import generation_rate
from nsa.generate.generation import generate_store
from nsa.generate.images import load_images
from nsa.generate.presets import resolve_settings
from nsa.generate.shards import label_to_mask
from nsa.generate.sources import elpv_source
from nsa.generate.synthesis import make_example, prepare_sources
from nsa.train.devices import resolve_device
from nsa.train.trainer import Run, TrainConfig, prepare_run_dir
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


class OnTheFly(IterableDataset):
    """Batches synthesised in the DataLoader worker, as the authors' code trains."""

    def __init__(self, settings: dict, batch_size: int, seed: int = 0) -> None:
        self.settings, self.batch_size, self.seed = settings, batch_size, seed
        self.sources = None

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if self.sources is None:
            files = elpv_source("mono").files
            self.sources = prepare_sources(load_images(files, self.settings["size"], 1),
                                           self.settings)
        for batch in itertools.count(worker, workers):
            rows = []
            for i in range(self.batch_size):
                ex = make_example(self.sources, self.settings, self.seed,
                                  batch * self.batch_size + i)
                rows.append(np.concatenate([ex.image, label_to_mask(ex.label)], axis=2))
            yield {"stacked": torch.from_numpy(np.stack(rows)).permute(0, 3, 1, 2)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(run: Run, batches, steps: int, warmup: int) -> float:
    """Examples/s of ``steps`` training steps after ``warmup`` steps."""
    batches = iter(batches)
    for _ in range(warmup):
        run.train_step(next(batches))
    _sync(run.device)
    start = time.perf_counter()
    for _ in range(steps):
        run.train_step(next(batches))
    _sync(run.device)
    return steps * run.config.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="examples in the store")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--loader-workers", type=int, default=8)
    parser.add_argument("--gen-workers", default="1,4,16")
    parser.add_argument("--gen-n", type=int, default=4000, help="examples per worker count")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="nsa-gpu-check-"))
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device} ({name}), torch {torch.__version__}, work dir {work}", flush=True)

    rows: list[tuple[str, str]] = []
    for workers in map(int, args.gen_workers.split(",")):
        rate = generation_rate("mono", args.size, args.gen_n, workers, work)
        rows.append((f"nsa-gen, {workers} workers ({args.gen_n} ex.)", f"{rate:,.0f} ex/s"))
        print(rows[-1], flush=True)
    store = work / "store.zarr"
    start = time.perf_counter()
    generate_store(elpv_source("mono"), store, n=args.n, size=args.size, overwrite=True,
                   progress=False)
    rows.append((f"nsa-gen command, all CPUs, start-up included ({args.n} ex.)",
                 f"{args.n / (time.perf_counter() - start):,.0f} ex/s"))
    print(rows[-1], flush=True)

    config = TrainConfig(shards=[str(store)], out=str(work / "run"), steps=10**6,
                         batch_size=args.batch_size, device=str(device),
                         loader_workers=args.loader_workers, progress=False, overwrite=True)
    prepare_run_dir(config.out, True)
    run = Run(config, Path(config.out), rank=0, world=1, device=device)
    run.model.train()
    streaming = timed_steps(run, run.batches(), args.steps, args.warmup)
    one = next(iter(run.batches()))
    compute = timed_steps(run, itertools.repeat(one), args.steps, args.warmup)
    settings = resolve_settings("elpv", {"size": args.size})
    loader = DataLoader(OnTheFly(settings, args.batch_size), batch_size=None,
                        num_workers=args.loader_workers, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if args.loader_workers else None)
    on_the_fly = timed_steps(run, loader, max(args.steps // 4, 5), args.warmup)
    rows += [
        ("training, streaming from the store", f"{streaming:,.0f} ex/s"),
        ("training, one in-memory batch (compute only)", f"{compute:,.0f} ex/s"),
        ("ratio streaming / compute (goal >= 0.9)", f"{streaming / compute:.2f}"),
        (f"authors' way: on-the-fly synthesis, {args.loader_workers} loader workers",
         f"{on_the_fly:,.0f} ex/s"),
        ("ratio streaming / on-the-fly", f"{streaming / on_the_fly:.1f}x"),
    ]
    print(f"\nbatch {args.batch_size}, {args.size}x{args.size}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}, {args.steps} timed steps")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value:>12}")


if __name__ == "__main__":
    main()
