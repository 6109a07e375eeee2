"""Synthesis speed: samples/s for the four settings of the issue, beside the authors' code.

One process, one thread (numpy, OpenCV and scipy are held to one thread), 256x256 images:
the first ``--images`` functional (probability 0) mono cells of the installed ELPV
dataset, resized with area interpolation, as grayscale (H, W, 1) and stacked to RGB.
Settings: the ``elpv`` preset (mixed Poisson, logistic-intensity) and its variants, plus
an object-style row (object masks with background (0, 20): the cells' dark corners).

Reference figures: the authors' code on this machine kind, from the synthesis issue. The
blend step is also measured against ``cv2.seamlessClone`` on the very same patches in
this run (grayscale padded to 3 channels, as the authors call it), so the comparison does
not depend on the machine the figures were taken on.

Run: ``.venv/bin/python bench/synthesis.py`` (about half a minute).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import elpv_dataset  # noqa: E402
import numpy as np  # noqa: E402
from nsa.generate import synthesis  # noqa: E402
from nsa.generate.poisson import poisson_blend  # noqa: E402
from nsa.generate.presets import resolve_settings  # noqa: E402
from nsa.generate.synthesis import make_example, prepare_sources  # noqa: E402

#: (name, channels, overrides of the elpv preset, authors' samples/s, goal ratio)
SETTINGS = (
    ("gray mixed + logistic-intensity", 1, {}, 36.0, 5.0),
    ("gray mixed + binary", 1, {"label_mode": "binary"}, 188.0, 2.0),
    ("RGB mixed + logistic-intensity", 3, {}, 25.0, 5.0),
    ("RGB normal + logistic-intensity", 3, {"mode": "normal"}, 21.0, 5.0),
    # object-style: object masks from the dark corners of the cells (authors: 22-27/s)
    ("RGB normal + logistic, object masks", 3,
     {"mode": "normal", "background": [0, 20], "min_object_pct": 0.7,
      "min_overlap_pct": 0.25}, 27.0, 5.0),
)


def elpv_cells(count: int, size: int) -> list[np.ndarray]:
    """The first ``count`` functional mono cells, (size, size, 1) uint8."""
    root = Path(elpv_dataset.__file__).parent / "data"
    cells = []
    for line in (root / "labels.csv").read_text().splitlines():
        path, probability, kind = line.split()
        if float(probability) == 0.0 and kind == "mono":
            image = cv2.imread(str(root / path), cv2.IMREAD_GRAYSCALE)
            cells.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[..., None])
            if len(cells) == count:
                break
    return cells


def samples_per_second(sources, settings, n: int, repeats: int = 3) -> tuple[float, float]:
    """(per CPU second, per wall second), each the best of ``repeats`` runs of ``n``.

    CPU time of this one-threaded process is what one core delivers even when other work
    shares the machine; wall time is shown beside it.
    """
    for index in range(20):  # warm caches (DST plans, eigenvalue tables)
        make_example(sources, settings, 1, index)
    cpu, wall = [], []
    for _ in range(repeats):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        for index in range(n):
            make_example(sources, settings, 0, index)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return n / min(cpu), n / min(wall)


def recorded_blends(sources, settings, n: int) -> list[tuple]:
    """The (dest box, patch, mask, mixed, box, whole image) of every Poisson blend in the
    first ``n`` examples, captured by wrapping the blend function for this run only."""
    calls = []

    def recorder(dest, src, mask, mixed, factor=1.0):
        calls.append((dest.copy(), src.copy(), mask.copy(), mixed))
        return poisson_blend(dest, src, mask, mixed, factor)

    synthesis.poisson_blend = recorder
    try:
        for index in range(n):
            make_example(sources, settings, 0, index)
    finally:
        synthesis.poisson_blend = poisson_blend
    return calls


def time_blends(calls, size: int) -> tuple[float, float, float]:
    """Mean CPU ms per patch for our blend and for cv2.seamlessClone on the same inputs,
    and the fraction of patch pixels where the two differ by more than one grey level."""
    start = time.process_time()
    ours = [poisson_blend(dest, src, mask, mixed) for dest, src, mask, mixed in calls]
    ours_ms = (time.process_time() - start) / len(calls) * 1e3
    prepared = []
    for dest, src, mask, mixed in calls:
        h, w = mask.shape
        pad = np.zeros((h, w, 3 - dest.shape[2]), np.uint8)
        dest3 = np.zeros((size, size, 3), np.uint8)  # a destination of the real image size
        dest3[:h, :w] = np.concatenate([dest, pad], axis=2)
        src3 = np.concatenate([src, pad], axis=2)
        # centre the mask's bounding box where ours has it: OpenCV centres that box
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        rh, rw = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        centre = (int(cols[0] + rw // 2), int(rows[0] + rh // 2))
        flag = cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE
        prepared.append((src3, dest3, mask * 255, centre, flag))
    start = time.process_time()
    theirs = [cv2.seamlessClone(src3, dest3, mask255.copy(), centre, flag)
              for src3, dest3, mask255, centre, flag in prepared]
    theirs_ms = (time.process_time() - start) / len(prepared) * 1e3
    far = total = 0
    for mine, cloned in zip(ours, theirs, strict=True):
        h, w, c = mine.shape
        diff = np.abs(mine.astype(int) - cloned[:h, :w, :c].astype(int))
        far += int(np.count_nonzero(diff > 1))
        total += diff.size
    return ours_ms, theirs_ms, far / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="examples per timed run (3 runs)")
    parser.add_argument("--images", type=int, default=100, help="ELPV cells used")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    gray = elpv_cells(args.images, args.size)
    rgb = [np.repeat(image, 3, axis=2) for image in gray]
    print(f"{len(gray)} ELPV mono cells at {args.size}x{args.size}, best of 3 x {args.n} "
          f"examples per setting, one thread, samples per CPU second (wall beside); "
          f"opencv {cv2.__version__}, numpy {np.__version__}")
    print(f"{'setting':36s} {'ours/s':>8s} {'(wall)':>8s} {'authors/s':>10s} {'ratio':>7s} "
          f"{'goal':>6s}")
    blend_rows = []
    for name, channels, overrides, reference, goal in SETTINGS:
        settings = resolve_settings("elpv", {**overrides, "size": args.size})
        sources = prepare_sources(gray if channels == 1 else rgb, settings)
        rate, wall_rate = samples_per_second(sources, settings, args.n)
        ratio = rate / reference
        verdict = "ok" if ratio >= goal else "MISSED"
        print(f"{name:36s} {rate:8.1f} {wall_rate:8.1f} {reference:10.1f} {ratio:6.1f}x "
              f"{goal:5.0f}x {verdict}")
        if overrides.get("label_mode") != "binary":
            calls = recorded_blends(sources, settings, 200)
            blend_rows.append((name, len(calls), *time_blends(calls, args.size)))
    print("\nPoisson blend step on the same patches (first 200 examples per setting), "
          "CPU ms per patch:")
    print(f"{'setting':36s} {'patches':>7s} {'ours ms':>8s} {'cv2 ms':>8s} {'speed-up':>9s} "
          f"{'pixels >1 apart':>16s}")
    for name, count, ours, theirs, far in blend_rows:
        print(f"{name:36s} {count:7d} {ours:8.3f} {theirs:8.3f} {theirs / ours:8.1f}x "
              f"{far:16.2e}")


if __name__ == "__main__":
    main()
