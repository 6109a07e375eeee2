"""``nsa-eval predict`` images/s on the CPU: torch against onnxruntime, at 128 and 256 px.

For each side, a run directory holding a freshly initialised NSA model (speed does not
depend on the weights; an ELPV-like preset: grey cells, the whole image seen) is exported
to ONNX, and the real ``predict`` runs over the same folder of 300x300 PNG cells once per
backend, end to end (decode, resize, model, maps/ .npy and .png, masks, scores.csv,
report.html). One untimed warm-up pass over a few images precedes each timing. Both
backends use every core torch uses (``torch.get_num_threads()``). Prints one line per
side and backend, and the onnxruntime/torch ratio.

Run: ``.venv/bin/python bench/predict.py [--images 48] [--batch-size 16]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from nsa.evaluate.predict import predict
from nsa.train.checkpoint import save_torch, write_json
from nsa.train.export import export_model
from nsa.train.model import NSAModel


def make_run(directory: Path, side: int) -> Path:
    """A run directory with config.json and model.pt for a grey ``side`` px model."""
    directory.mkdir(parents=True)
    torch.manual_seed(0)
    model = NSAModel(1).eval()
    save_torch({"model": model.state_dict()}, directory / "model.pt")
    write_json({"channels": 1, "settings": {"preset": "bench", "kind": "elpv", "size": side,
                                            "augment": {}}}, directory / "config.json")
    return directory


def make_images(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"cell{i:03d}.png"),
                    rng.integers(0, 255, (300, 300), dtype=np.uint8))
    return folder


def images_per_s(model: Path, images: Path, out: Path, batch_size: int, n: int) -> float:
    warm = images.parent / "warm"
    if not warm.exists():
        warm.mkdir()
        for path in sorted(images.iterdir())[:batch_size]:
            (warm / path.name).symlink_to(path)
    predict(model, warm, out / "warm", batch_size=batch_size, progress=False,
            threshold=0.5, pixel_threshold=0.5)
    start = time.perf_counter()
    predict(model, images, out / "timed", batch_size=batch_size, progress=False,
            threshold=0.5, pixel_threshold=0.5)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    print(f"CPU threads: {torch.get_num_threads()}, images: {args.images} of 300x300 px, "
          f"batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        images = make_images(base / "images", args.images)
        for side in (128, 256):
            run = make_run(base / f"run{side}", side)
            onnx_file = export_model(run, "onnx")
            rates = {}
            for name, model in (("torch", run), ("onnxruntime", onnx_file)):
                rates[name] = images_per_s(model, images, base / f"out{side}{name}",
                                           args.batch_size, args.images)
                print(f"{side} px  {name:12s} {rates[name]:7.1f} images/s")
            print(f"{side} px  onnxruntime / torch = {rates['onnxruntime'] / rates['torch']:.2f}")


if __name__ == "__main__":
    main()
