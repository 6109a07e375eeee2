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

What the maps show: ELPV cells with a large dark (inactive) area are often outlined
rather than filled by the map. For every defective test cell whose largest dark region
(blurred grey level under half the cell's median) covers at least 5 % of it, the
benchmark compares the map's mean inside the region (eroded by 4 px) with its mean on
the region's edge (a 7 px band); ``fill`` is the median over those cells of inside /
edge (1: filled evenly; well under 1: outlined). ``WORK/maps.png`` shows the four cells
with the largest dark regions and each arm's seed-0 map.

An ablation whose store holds exactly the project store's examples (equal per-chunk
checksums; e.g. ``label-region`` on ELPV, whose rectangular patches make overwrite and
union the same region) is not trained again: its figures are the project's, marked
``identical_to``.

Each (arm, seed) result is kept in ``WORK/results/ARM-sSEED.json``, so an interrupted run
continues where it stopped (``--redo`` forgets them; results of another nsa-pipeline version or
budget are made again). The table prints each arm's mean
+- sample standard deviation, and its difference to each ``--baselines`` arm (the
release and the project's defaults) with a 95 % Welch t-interval (seeds are treated as
independent draws; the release's random streams cannot be paired with ours). It is
also written to ``WORK/fidelity.md``.

Run (about 6 minutes per arm and seed on 2 CPU cores; ``--device cuda`` on a GPU)::

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

import cv2
import matplotlib
import numpy as np
import torch
from nsa.evaluate.inference import Geometry, anomaly_maps
from nsa.evaluate.metrics import auroc
from nsa.evaluate.run import score_testset
from nsa.evaluate.testsets import elpv_testset, read_test_image
from nsa.generate.images import read_images, resize_square
from nsa.generate.presets import resolve_settings
from nsa.generate.sources import elpv_source
from nsa.train.checkpoint import load_model
from nsa.train.devices import resolve_device
from scipy import stats

from nsa import __version__

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
#: Ablations that change only how examples are made (not what training reads).
SYNTHESIS_ONLY = {"label-region", "placement", "rounding", "pairing"}


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
             "--no-progress", *gen_extra], log)
    generated = time.perf_counter()
    same = (_same_store(store, work / "stores" / f"project-s{seed}.zarr")
            if arm in SYNTHESIS_ONLY else None)
    if same is not None:
        return {**same, "store": str(store), "generate_s": generated - started,
                "identical_to": "project"}
    run_dir = work / "runs" / f"{arm}-s{seed}"
    run([str(BIN / "nsa-train"), "--shards", str(store), "--out", str(run_dir), "--overwrite",
         "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seed", str(seed),
         "--device", args.device, "--no-progress", *train_extra], log)
    trained = time.perf_counter()
    evaluation = work / "evals" / f"{arm}-s{seed}"
    run([str(BIN / "nsa-eval"), "elpv", "--type", CELL_TYPE, "--model", str(run_dir),
         "--out", str(evaluation), "--protocol", "nsa", "--max-pictures", "0",
         "--device", args.device, "--no-progress"], log)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    value = metrics["categories"][f"elpv-{CELL_TYPE}"]["image_auroc"]
    return {"image_auroc": value, "generate_s": generated - started,
            "train_s": trained - generated, "evaluate_s": time.perf_counter() - trained,
            "store": str(store), "run": str(run_dir)}


def _same_store(store: Path, project: Path) -> dict[str, Any] | None:
    """The project arm's kept result when ``store`` holds exactly the project store's
    examples (equal per-chunk checksums): training and evaluation are deterministic, so
    the arm's figures are the project's. None otherwise."""
    if store == project or not project.exists():
        return None
    kept = project.parent.parent / "results" / f"{project.stem}.json"
    if not kept.exists():
        return None
    import zarr

    if not np.array_equal(zarr.open_array(store / "checksums", mode="r")[:],
                          zarr.open_array(project / "checksums", mode="r")[:]):
        return None
    record = json.loads(kept.read_text())
    return {key: record[key] for key in ("image_auroc", "train_s", "evaluate_s", "run")}


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
    device = resolve_device(args.device)
    model = resnet18_enc_dec(num_classes=1, in_channels=1, final_activation="identity")
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps, eta_min=1e-6)
    loss_function = torch.nn.BCEWithLogitsLoss()
    model.train()
    step, losses = 0, []
    while step < args.steps:
        for pixels, label in loader:
            optimizer.zero_grad()
            loss = loss_function(model(pixels.to(device)), label.to(device))
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            if step == args.steps:
                break
    trained = time.perf_counter()
    torch.save(model.cpu().state_dict(), work / "runs" / f"authors-s{seed}.pt")
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


def dark_regions(size: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Defective test cells at ``size`` px, (N, size, size, 1) uint8, with a large dark
    region, largest first, and per cell (inside, edge) bool masks of that region."""
    cells, regions = [], []
    for image in elpv_testset(CELL_TYPE).images:
        if image.label != 1:
            continue
        pixels = resize_square(read_test_image(image, 1, False)[0], size)
        grey = cv2.GaussianBlur(pixels[..., 0].astype(np.float32), (5, 5), 0)
        dark = (grey < 0.5 * np.median(grey)).astype(np.uint8)
        count, labels, table, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
        if count < 2:
            continue
        largest = 1 + int(np.argmax(table[1:, cv2.CC_STAT_AREA]))
        region = (labels == largest).astype(np.uint8)
        if region.sum() < 0.05 * size * size:
            continue
        square = np.ones((3, 3), np.uint8)
        inside = cv2.erode(region, square, iterations=4).astype(bool)
        edge = (cv2.dilate(region, square, iterations=3)
                - cv2.erode(region, square, iterations=3)).astype(bool)
        if inside.sum() < 20:
            continue
        cells.append(pixels)
        regions.append((int(region.sum()), inside, edge))
    order = np.argsort([-area for area, _, _ in regions], kind="stable")
    return (np.stack([cells[i] for i in order]),
            [(regions[i][1], regions[i][2]) for i in order])


#: Grey levels added to a box of each held-out good cell by :func:`shift_figures`.
SHIFTS = (-2, -1, 1, 2)


def shifted_boxes(cells: np.ndarray, shift: int, seed: int = 0) -> np.ndarray:
    """``cells`` (N, H, W, 1) uint8 with one random box per cell (20 to 45 % of each
    side, drawn from ``seed``, the same boxes for every shift) moved by ``shift`` grey
    levels, clipped to 0..255."""
    rng = np.random.default_rng(seed)
    out = cells.astype(np.int16)
    side = cells.shape[1]
    for cell in out:
        h, w = rng.integers(int(0.2 * side), int(0.45 * side), 2)
        y, x = rng.integers(0, side - h), rng.integers(0, side - w)
        cell[y:y + h, x:x + w] += shift
    return np.clip(out, 0, 255).astype(np.uint8)


def shift_figures(results: dict[str, dict[int, float]], args: argparse.Namespace) -> str:
    """Per arm, the share of held-out good cells whose score (mean of the map) rises when
    a box of the cell is made a little darker or brighter (:data:`SHIFTS`), mean over the
    seeds. A model that took "slightly darker" for "anomalous" (truncated blends are half
    a grey level darker on average) scores darker boxes up much more often than 50 %."""
    good = [image for image in elpv_testset(CELL_TYPE).images if image.label == 0]
    cells = np.stack([resize_square(read_test_image(image, 1, False)[0], args.size)
                      for image in good])
    variants = {shift: shifted_boxes(cells, shift) for shift in SHIFTS}
    geometry = Geometry(side=args.size, crop=None)
    lines = [f"Share of the {len(cells)} held-out good cells scored higher with a box "
             "made darker (-) or brighter (+) by 1 or 2 grey levels, mean over seeds:", "",
             "| arm | " + " | ".join(f"{shift:+d}" for shift in SHIFTS) + " |",
             "|---|" + "---|" * len(SHIFTS)]
    for arm, by_seed in results.items():
        shares = []
        for seed in sorted(by_seed):
            model = arm_model(arm, seed, args)
            if model is None:
                continue
            base = np.array([m.mean() for m in anomaly_maps(model, cells, geometry, "cpu")])
            shares.append([float(np.mean(np.array([m.mean() for m in anomaly_maps(
                model, variant, geometry, "cpu")]) > base)) for variant in variants.values()])
        if shares:
            mean = np.mean(shares, axis=0)
            lines.append(f"| {arm} | {' | '.join(f'{v:.0%}' for v in mean)} |")
    return "\n".join(lines)


def arm_model(arm: str, seed: int, args: argparse.Namespace) -> torch.nn.Module | None:
    """The trained model of (arm, seed), or None when it was not kept."""
    if arm == "authors":
        weights = args.work / "runs" / f"authors-s{seed}.pt"
        if not weights.exists():
            return None
        sys.path.insert(0, str(args.authors_repo))
        resnet18_enc_dec = importlib.import_module("model.resnet").resnet18_enc_dec
        model = resnet18_enc_dec(num_classes=1, in_channels=1, final_activation="identity")
        model.load_state_dict(torch.load(weights, map_location="cpu"))
        return model.eval()
    run_dir = args.work / "runs" / f"{arm}-s{seed}"
    return load_model(run_dir)[0] if (run_dir / "model.pt").exists() else None


def fill_figures(results: dict[str, dict[int, float]], args: argparse.Namespace) -> str:
    """Median inside/edge ratio of the maps on dark regions per arm (mean over seeds),
    and WORK/maps.png with the four largest dark regions' maps of each arm's first seed."""
    cells, regions = dark_regions(args.size)
    geometry = Geometry(side=args.size, crop=None)
    lines = [f"| arm | fill (inside / edge of {len(cells)} dark regions), per seed | mean |",
             "|---|---|---|"]
    shown: dict[str, np.ndarray] = {}
    for arm, by_seed in results.items():
        ratios = {}
        for seed in sorted(by_seed):
            model = arm_model(arm, seed, args)
            if model is None:
                continue
            maps = anomaly_maps(model, cells, geometry, "cpu")
            ratios[seed] = float(np.median([m[inside].mean() / max(m[edge].mean(), 1e-6)
                                            for m, (inside, edge) in zip(maps, regions,
                                                                         strict=True)]))
            shown.setdefault(arm, maps[:4])
        if ratios:
            per_seed = ", ".join(f"{s}: {r:.2f}" for s, r in ratios.items())
            lines.append(f"| {arm} | {per_seed} | {np.mean(list(ratios.values())):.2f} |")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(4, len(cells))
    fig, axes = plt.subplots(rows, 1 + len(shown), figsize=(2 * (1 + len(shown)), 2 * rows),
                             squeeze=False)
    for row in range(rows):
        axes[row, 0].imshow(cells[row][..., 0], cmap="gray", vmin=0, vmax=255)
        axes[0, 0].set_title("cell")
        for col, (arm, maps) in enumerate(shown.items(), start=1):
            axes[row, col].imshow(maps[row], cmap="inferno", vmin=0, vmax=1)
            axes[0, col].set_title(arm, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.work / "maps.png", dpi=80)
    plt.close(fig)
    return "\n".join(lines)


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


def table(results: dict[str, dict[int, float]], baselines: list[str]) -> str:
    """Markdown table: per arm the AUROC of each seed, mean +- sample std, and its
    difference to each of ``baselines`` with a 95 % Welch interval."""
    head = "".join(f" minus {b} [95 % CI] |" for b in baselines)
    lines = [f"| arm | seeds | image AUROC per seed | mean +- std |{head}",
             "|---|---|---|---|" + "---|" * len(baselines)]
    for arm, by_seed in results.items():
        if not by_seed:
            continue
        values = [by_seed[s] for s in sorted(by_seed)]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        per_seed = ", ".join(f"{s}: {by_seed[s]:.3f}" for s in sorted(by_seed))
        versus = []
        for baseline in baselines:
            if arm == baseline or not results.get(baseline):
                versus.append("")
                continue
            diff, lo, hi = welch(values, list(results[baseline].values()))
            versus.append(f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lines.append(f"| {arm} | {len(values)} | {per_seed} | {np.mean(values):.3f} +- "
                     f"{std:.3f} | " + " | ".join(versus) + " |")
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
    parser.add_argument("--baselines", nargs="+", default=["authors", "project"],
                        choices=ARMS, help="arms every other arm is compared with")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or auto for training and scoring every arm")
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
                      "size": args.size, "nsa_pipeline": __version__}
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
            record.update(arm=arm, seed=seed, budget=budget, threads=threads, device=args.device,
                          machine=platform.processor() or platform.machine(),
                          torch=torch.__version__)
            path.write_text(json.dumps(record, indent=1) + "\n")
            results[arm][seed] = record["image_auroc"]
            print(f"  image AUROC {record['image_auroc']:.4f}", flush=True)
    text = "\n\n".join((table(results, args.baselines), fill_figures(results, args),
                         shift_figures(results, args)))
    (args.work / "fidelity.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
