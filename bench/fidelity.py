"""Fidelity, side by side: the NSA authors' release against nsa-pipeline on ELPV, over seeds.

Every arm trains on the same split (the ELPV ``mono`` training cells, 441 images at
128 px), with the same budget (``--n`` examples = ``--steps`` x ``--batch-size``), the
same schedule (Adam 1e-3, cosine per step to 1e-6, binary cross-entropy on logits) and
is scored the same way (``nsa`` protocol: mean of the 128 px map; image AUROC over the
147 held-out functional cells and the 369 defective ones, ``evaluate/run.py``).

Arms (``--arms``; each over every ``--seeds``):

- ``authors``: the release (github.com/hmsch/natural-synthetic-anomalies, MIT), used
  unmodified from the checkout given by ``--authors-repo``: its ``patch_ex`` makes an
  example on the fly each time an image is drawn, paired with the image drawn before it
  (as its ``SelfSupMVTecDataset``), with the ``elpv`` preset's synthesis figures; its
  ``resnet18_enc_dec`` (one input channel, no final activation: the sigmoid is in the
  loss, ``BCEWithLogitsLoss``, the same function as its sigmoid + ``BCELoss``). Images
  are not flipped (the release flips only textures, and ELPV is not one of its
  datasets). Data loading in-process (``num_workers=0``), so the pairing is exactly
  "the previous image".
- ``project``: ``nsa-gen elpv --type mono --size 128 --n N --seed S``, ``nsa-train
  --steps --batch-size --seed S``, ``nsa-eval elpv``: the product's CLIs, defaults.
- ablations, one change each from ``project`` towards the release:
  ``final-layer`` (``nsa-train --final-layer transposed``), ``label-region``
  (``--set label_region="overwrite"``), ``placement`` (``--set
  patch_placement="seamless-clone"``), ``rounding`` (``--set rounding="truncate"``),
  ``no-flips`` (``--set 'augment={"vflip": false, "hflip": false}'``) and
  ``pairing`` (``--set pairing="previous"``).

Each (arm, seed) result is kept in ``WORK/results/ARM-sSEED.json``, so an interrupted run
continues where it stopped (``--redo`` forgets them). The table prints each arm's mean
+- sample standard deviation, its difference to ``--baseline`` and a 95 % Welch
t-interval of that difference (seeds are independent draws; the release's random
streams cannot be paired with ours). It is also written to ``WORK/fidelity.md``.

Run (about 5 minutes per arm and seed on 2 CPU cores)::

    git clone https://github.com/hmsch/natural-synthetic-anomalies /tmp/nsa-release
    .venv/bin/python bench/fidelity.py --authors-repo /tmp/nsa-release \\
        --work /tmp/fidelity --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nsa.evaluate.inference import Geometry
from nsa.evaluate.metrics import auroc
from nsa.evaluate.run import score_testset
from nsa.evaluate.testsets import elpv_testset
from nsa.generate.images import read_images
from nsa.generate.presets import resolve_settings
from nsa.generate.sources import elpv_source
from scipy import stats

CELL_TYPE = "mono"
BIN = Path(sys.executable).parent

#: Project arms: extra nsa-gen options, extra nsa-train options.
ABLATIONS: dict[str, tuple[list[str], list[str]]] = {
    "project": ([], []),
    "final-layer": ([], ["--final-layer", "transposed"]),
    "label-region": (["--set", 'label_region="overwrite"'], []),
    "placement": (["--set", 'patch_placement="seamless-clone"'], []),
    "rounding": (["--set", 'rounding="truncate"'], []),
    "no-flips": (["--set", 'augment={"vflip": false, "hflip": false}'], []),
    "pairing": (["--set", 'pairing="previous"'], []),
}
ARMS = ["authors", *ABLATIONS]


def run(command: list[str], log: Path) -> None:
    """Run a CLI, its output appended to ``log``; a failure stops the benchmark."""
    with log.open("a") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} exited {done.returncode}; see {log}")


def project_arm(arm: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Generate, train and evaluate with the product's CLIs; the image AUROC from
    ``metrics.json``. A store that only training options change is shared with ``project``."""
    gen_extra, train_extra = ABLATIONS[arm]
    store_arm = arm if gen_extra else "project"
    store = work / "stores" / f"{store_arm}-s{seed}.zarr"
    log = work / "logs" / f"{arm}-s{seed}.log"
    started = time.perf_counter()
    if not (store / "zarr.json").exists() or not _complete(store):
        run([str(BIN / "nsa-gen"), "elpv", "--type", CELL_TYPE, "--size", str(args.size),
             "--n", str(args.n), "--seed", str(seed), "--out", str(store), "--overwrite",
             "--quiet", *gen_extra], log)
    generated = time.perf_counter()
    run_dir = work / "runs" / f"{arm}-s{seed}"
    run([str(BIN / "nsa-train"), "--shards", str(store), "--out", str(run_dir), "--overwrite",
         "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seed", str(seed),
         "--device", "cpu", "--no-progress", *train_extra], log)
    trained = time.perf_counter()
    evaluation = work / "evals" / f"{arm}-s{seed}"
    run([str(BIN / "nsa-eval"), "elpv", "--type", CELL_TYPE, "--model", str(run_dir),
         "--out", str(evaluation), "--protocol", "nsa", "--max-pictures", "0",
         "--no-progress"], log)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    value = metrics["categories"][f"elpv-{CELL_TYPE}"]["image_auroc"]
    return {"image_auroc": value, "generate_s": generated - started,
            "train_s": trained - generated, "evaluate_s": time.perf_counter() - trained,
            "store": str(store), "run": str(run_dir)}


def _complete(store: Path) -> bool:
    attrs = json.loads((store / "zarr.json").read_text()).get("attributes", {})
    return bool(attrs.get("complete"))


def release_arguments(settings: dict[str, Any]) -> dict[str, Any]:
    """The release's ``patch_ex`` keyword arguments for the project's resolved settings
    (the same synthesis figures; the blend mode as OpenCV's clone flag)."""
    import cv2

    modes = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE, "mix": "mix",
             "swap": "swap", "uniform": "uniform"}
    return {
        "same": settings["same"], "num_patches": settings["num_patches"],
        "mode": modes[settings["mode"]],
        "width_bounds_pct": tuple(tuple(pair) for pair in settings["width_bounds"]),
        "min_object_pct": settings["min_object_pct"],
        "min_overlap_pct": settings["min_overlap_pct"], "shift": settings["shift"],
        "label_mode": settings["label_mode"],
        "skip_background": tuple(settings["background"]) if settings["background"] else None,
        "tol": settings["tol"], "resize": settings["resize"],
        "gamma_params": tuple(settings["gamma_params"]) if settings["gamma_params"] else None,
        "intensity_logistic_params": tuple(settings["logistic_params"]),
        "resize_bounds": tuple(settings["resize_bounds"]),
        "num_ellipses": settings["num_ellipses"], "verbose": False,
        "cutpaste_patch_generation": settings["cutpaste"],
    }


class ReleaseStream(torch.utils.data.Dataset):
    """The release's training dataset logic (``SelfSupMVTecDataset.__getitem__`` with
    self-supervision on) over in-memory (H, W, C) uint8 images: each drawn image is the
    destination, the image drawn before it the source. Returns the image as float
    (C, H, W) in [0, 1] and the label (1, H, W)."""

    def __init__(self, images: list[np.ndarray], patch_ex: Any, arguments: dict[str, Any]):
        self.images = images
        self.patch_ex = patch_ex
        self.arguments = arguments
        self.prev_idx = np.random.randint(len(images))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.patch_ex(self.images[idx], self.images[self.prev_idx],
                                     **self.arguments)
        self.prev_idx = idx
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
        return pixels, torch.tensor(label[None, ..., 0]).float()


def authors_arm(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train the release's model on the release's on-the-fly examples; score as nsa-eval."""
    sys.path.insert(0, str(args.authors_repo))
    patch_ex = importlib.import_module("self_sup_data.self_sup_tasks").patch_ex
    resnet18_enc_dec = importlib.import_module("model.resnet").resnet18_enc_dec
    settings = resolve_settings("elpv", {"size": args.size})
    images = read_images(elpv_source(CELL_TYPE, "train").files, args.size, channels=1).images
    started = time.perf_counter()
    np.random.seed(seed)
    torch.manual_seed(seed)
    dataset = ReleaseStream(images, patch_ex, release_arguments(settings))
    loader = torch.utils.data.DataLoader(dataset, args.batch_size, shuffle=True,
                                         num_workers=0, drop_last=True)
    model = resnet18_enc_dec(num_classes=1, in_channels=1, final_activation="identity")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps, eta_min=1e-6)
    loss_function = torch.nn.BCEWithLogitsLoss()
    model.train()
    step, losses = 0, []
    while step < args.steps:
        for pixels, label in loader:
            optimizer.zero_grad()
            loss = loss_function(model(pixels), label)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            if step == args.steps:
                break
    trained = time.perf_counter()
    scored = score_testset(model.eval(), elpv_testset(CELL_TYPE),
                           geometry=Geometry(side=args.size, crop=None), channels=1,
                           protocol="nsa", device=torch.device("cpu"), batch_size=16,
                           max_pictures=0)
    return {"image_auroc": auroc(scored.scores, scored.labels.astype(bool)),
            "train_s": trained - started, "evaluate_s": time.perf_counter() - trained,
            "final_loss": float(np.mean(losses[-10:])),
            "release_commit": _commit(args.authors_repo)}


def _commit(repo: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() or None


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95 % Welch t-interval (nan with under 2 values each)."""
    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return diff, diff - half, diff + half


def table(results: dict[str, dict[int, float]], baseline: str) -> str:
    lines = [f"| arm | seeds | image AUROC per seed | mean +- std | minus {baseline} "
             "[95 % CI] |", "|---|---|---|---|---|"]
    for arm, by_seed in results.items():
        if not by_seed:
            continue
        values = [by_seed[s] for s in sorted(by_seed)]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        per_seed = ", ".join(f"{s}: {by_seed[s]:.3f}" for s in sorted(by_seed))
        if arm == baseline or not results.get(baseline):
            versus = "" if arm == baseline else "no baseline"
        else:
            diff, lo, hi = welch(values, list(results[baseline].values()))
            versus = f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        lines.append(f"| {arm} | {len(values)} | {per_seed} | {np.mean(values):.3f} +- "
                     f"{std:.3f} | {versus} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors-repo", type=Path,
                        help="checkout of hmsch/natural-synthetic-anomalies (arm authors)")
    parser.add_argument("--work", type=Path, required=True, help="folder for everything made")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=8000, help="examples = steps x batch size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--baseline", default="authors", choices=ARMS)
    parser.add_argument("--redo", action="store_true", help="forget kept results")
    args = parser.parse_args()
    if args.n % args.batch_size:
        sys.exit("error: --n must be a multiple of --batch-size (one pass, whole batches)")
    args.steps = args.n // args.batch_size
    if "authors" in args.arms and (args.authors_repo is None
                                   or not (args.authors_repo / "self_sup_data").is_dir()):
        sys.exit("error: --authors-repo must name a checkout of "
                 "hmsch/natural-synthetic-anomalies for the authors arm")
    for sub in ("results", "logs", "stores", "runs", "evals"):
        (args.work / sub).mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    results: dict[str, dict[int, float]] = {arm: {} for arm in args.arms}
    for arm in args.arms:
        for seed in args.seeds:
            path = args.work / "results" / f"{arm}-s{seed}.json"
            budget = {"n": args.n, "steps": args.steps, "batch_size": args.batch_size,
                      "size": args.size}
            if path.exists() and not args.redo:
                kept = json.loads(path.read_text())
                if kept["budget"] == budget:
                    results[arm][seed] = kept["image_auroc"]
                    continue
            print(f"{time.strftime('%H:%M:%S')} {arm} seed {seed} ...", flush=True)
            if arm == "authors":
                record = authors_arm(seed, args, args.work)
            else:
                record = project_arm(arm, seed, args, args.work)
            record.update(arm=arm, seed=seed, budget=budget, threads=threads,
                          machine=platform.processor() or platform.machine(),
                          torch=torch.__version__)
            path.write_text(json.dumps(record, indent=1) + "\n")
            results[arm][seed] = record["image_auroc"]
            print(f"  image AUROC {record['image_auroc']:.4f}", flush=True)
    text = table(results, args.baseline)
    (args.work / "fidelity.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
