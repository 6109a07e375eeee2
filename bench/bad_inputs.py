"""Sweep bad inputs through the four commands and count how each ends.

Not a timing benchmark: a robustness census, run by hand, that prints one row per bad input
and the totals. Each case runs the real console script in a subprocess (as a user would),
with a time limit, inside a scratch folder that the script builds first (small image
folders, one small store, one short run). A case is **handled** when the command

- exits with the expected code (2 for bad input, 1 for a failed check or environment),
- prints exactly one ``error:`` line on stderr (``warning:`` lines may precede it), or
  typer's own usage message for a missing or malformed option (exit 2),
- prints no Python traceback, and
- returns within the time limit.

Anything else is counted as a traceback, a wrong exit code (0 is the worst: the command
claimed success), a missing or repeated ``error:`` line, or a hang.

Run: ``.venv/bin/python bench/bad_inputs.py [--only SUBSTRING] [--keep DIR]``
(about 5 minutes on 2 cores: most of it is importing torch and Ray once per case).
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

BIN = Path(sys.executable).parent
TIME_LIMIT_S = 90


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (cwd = scratch folder) and the exit codes allowed."""

    name: str
    argv: list[str]
    codes: tuple[int, ...] = (2,)


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def build_scratch(root: Path) -> None:
    """Image folders, one store, one run and the broken variants the cases point at."""
    rng = np.random.default_rng(0)
    for i in range(8):
        _png(root / "good" / f"{i}.png", rng.integers(60, 200, (64, 64), dtype=np.uint8))
    for i in range(3):
        image = rng.integers(60, 200, (64, 64), dtype=np.uint8)
        image[20:30, 20:30] = 250
        mask = np.zeros((64, 64), np.uint8)
        mask[20:30, 20:30] = 255
        _png(root / "bad" / f"{i}.png", image)
        _png(root / "masks" / f"{i}_mask.png", mask)
    _png(root / "masks_small" / "0_mask.png", np.zeros((32, 32), np.uint8))
    for name in ("1", "2"):
        shutil.copy(root / "masks" / f"{name}_mask.png", root / "masks_small" / f"{name}_mask.png")
    shutil.copytree(root / "good", root / "zero_byte")
    (root / "zero_byte" / "9.png").write_bytes(b"")
    shutil.copytree(root / "good", root / "not_image")
    (root / "not_image" / "9.png").write_text("this is not a png")
    shutil.copytree(root / "good", root / "truncated")
    data = (root / "good" / "0.png").read_bytes()
    (root / "truncated" / "9.png").write_bytes(data[: len(data) // 2])
    (root / "empty").mkdir()
    (root / "a_file").write_text("x")
    mvtec = root / "mvtec" / "bottle"
    shutil.copytree(root / "good", mvtec / "train" / "good")
    shutil.copytree(root / "good", mvtec / "test" / "good")
    shutil.copytree(root / "bad", mvtec / "test" / "scratch")
    shutil.copytree(root / "masks", mvtec / "ground_truth" / "scratch")
    wrong = root / "mvtec_wrong_mask" / "bottle"
    shutil.copytree(mvtec, wrong)
    _png(wrong / "ground_truth" / "scratch" / "0_mask.png", np.zeros((32, 32), np.uint8))
    (root / "list_empty.txt").write_text("")
    (root / "list_missing.txt").write_text("nope.png\n")
    _run(["nsa-gen", "folder", "--root", "good", "--preset", "elpv", "--size", "64", "--n",
          "128", "--chunk-size", "32", "--workers", "1", "--out", "store.zarr", "--no-progress"],
         root)
    _run(["nsa-train", "--shards", "store.zarr", "--out", "run", "--steps", "4",
          "--batch-size", "8", "--loader-workers", "0", "--no-progress"], root)
    shutil.copytree(root / "run", root / "run_no_model")
    (root / "run_no_model" / "model.pt").unlink()
    shutil.copytree(root / "run", root / "run_no_checkpoint")
    (root / "run_no_checkpoint" / "checkpoint.pt").unlink(missing_ok=True)
    for name in ("store_no_checksums", "store_bad_n", "store_incomplete"):
        shutil.copytree(root / "store.zarr", root / f"{name}.zarr")
    shutil.rmtree(root / "store_no_checksums.zarr" / "checksums")
    _edit_attrs(root / "store_bad_n.zarr", "n", 4096)
    _edit_attrs(root / "store_incomplete.zarr", "complete", False)
    configs = {
        "cfg_n_abc.toml": 'n = "abc"\n',
        "cfg_generate_5.toml": "generate = 5\n",
        "cfg_categories_str.toml": '[source]\nkind = "mvtec"\nroot = "mvtec"\n'
                                   'categories = "bottle"\n',
        "cfg_unknown_key.toml": '[source]\nkind = "elpv"\ntype = "mono"\nfoo = 1\n',
        "cfg_bad_protocol.toml": '[source]\nkind = "elpv"\ncell_type = "mono"\n'
                                 '[generate]\nn = 64\n[train]\nsteps = 1\n'
                                 '[evaluate]\nprotocol = "nope"\n',
        "cfg_steps_0.toml": '[source]\nkind = "elpv"\ncell_type = "mono"\n'
                            '[generate]\nn = 64\n[train]\nsteps = 0\n',
        "cfg_syntax.toml": "[source\n",
    }
    for name, text in configs.items():
        (root / name).write_text(text)
    (root / "cfg_binary.toml").write_bytes(b"\xff\xfe\x00bad")
    (root / "cfg_dir.toml").mkdir()


def _edit_attrs(store: Path, key: str, value: object) -> None:
    import json

    meta = store / "zarr.json"
    data = json.loads(meta.read_text())
    data["attributes"][key] = value
    meta.write_text(json.dumps(data))


def _run(argv: list[str], cwd: Path, timeout: float = TIME_LIMIT_S,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [str(BIN / argv[0]), *argv[1:]]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def cases(http_port: int) -> list[Case]:
    gen_folder = ["nsa-gen", "folder", "--preset", "elpv", "--size", "64", "--n", "64",
                  "--workers", "1", "--no-progress"]
    train = ["nsa-train", "--no-progress", "--loader-workers", "0", "--batch-size", "8"]
    ev_folder = ["nsa-eval", "folder", "--good", "good", "--defect", "bad", "--masks", "masks",
                 "--no-progress"]
    run = ["nsa-pipeline", "run"]
    return [
        # nsa-gen
        Case("gen: missing root", [*gen_folder, "--root", "nope", "--out", "o1.zarr"]),
        Case("gen: empty folder", [*gen_folder, "--root", "empty", "--out", "o2.zarr"]),
        Case("gen: zero-byte png", [*gen_folder, "--root", "zero_byte", "--out", "o3.zarr"]),
        Case("gen: text file named .png", [*gen_folder, "--root", "not_image",
                                           "--out", "o4.zarr"]),
        Case("gen: truncated png", [*gen_folder, "--root", "truncated", "--out", "o5.zarr"]),
        Case("gen: --n 0", [*gen_folder, "--root", "good", "--n", "0", "--out", "o6.zarr"]),
        Case("gen: --workers 0", [*gen_folder, "--root", "good", "--workers", "0",
                                  "--out", "o7.zarr"]),
        Case("gen: --chunk-size 0", [*gen_folder, "--root", "good", "--chunk-size", "0",
                                     "--out", "o8.zarr"]),
        Case("gen: --size 0", [*gen_folder, "--root", "good", "--size", "0", "--out", "o9.zarr"]),
        Case("gen: --seed -1", [*gen_folder, "--root", "good", "--seed", "-1",
                                "--out", "o10.zarr"]),
        Case("gen: unknown preset", ["nsa-gen", "folder", "--root", "good", "--preset", "nope",
                                     "--n", "64", "--out", "o11.zarr"]),
        Case("gen: --set augment=5", [*gen_folder, "--root", "good", "--set", "augment=5",
                                      "--out", "o12.zarr"]),
        Case("gen: --set unknown key", [*gen_folder, "--root", "good", "--set", "nope=1",
                                        "--out", "o13.zarr"]),
        Case("gen: --set without =", [*gen_folder, "--root", "good", "--set", "nope",
                                      "--out", "o14.zarr"]),
        Case("gen: --set num_patches=-3", [*gen_folder, "--root", "good", "--set",
                                           "num_patches=-3", "--out", "o15.zarr"]),
        Case("gen: --out below a file", [*gen_folder, "--root", "good",
                                         "--out", "a_file/x.zarr"]),
        Case("gen: --out an existing folder", [*gen_folder, "--root", "good", "--out", "good"]),
        Case("gen: --out an existing store", [*gen_folder, "--root", "good",
                                              "--out", "store.zarr"]),
        Case("gen: --resume with another n", [*gen_folder, "--root", "good", "--n", "96",
                                              "--chunk-size", "32", "--out", "store.zarr",
                                              "--resume"]),
        Case("gen: --address malformed", [*gen_folder, "--root", "good", "--address", "x",
                                          "--out", "o16.zarr"]),
        Case("gen: --address closed port", [*gen_folder, "--root", "good", "--address",
                                            "127.0.0.1:1", "--out", "o17.zarr"]),
        Case("gen: --address not Ray", [*gen_folder, "--root", "good", "--address",
                                        f"127.0.0.1:{http_port}", "--out", "o18.zarr"]),
        Case("gen: mvtec unknown category", ["nsa-gen", "mvtec", "--root", "mvtec",
                                             "--category", "nope", "--n", "64",
                                             "--out", "o19.zarr"]),
        Case("gen: chestxray empty list", ["nsa-gen", "chestxray", "--root", "good", "--list",
                                           "list_empty.txt", "--n", "64", "--out", "o20.zarr"]),
        Case("gen: chestxray missing image", ["nsa-gen", "chestxray", "--root", "good",
                                              "--list", "list_missing.txt", "--n", "64",
                                              "--out", "o21.zarr"]),
        Case("gen: elpv unknown type", ["nsa-gen", "elpv", "--type", "triple", "--n", "64",
                                        "--out", "o22.zarr"]),
        Case("gen: preview below a file", ["nsa-gen", "preview", "folder", "--root", "good",
                                           "--preset", "elpv", "--out", "a_file/p.png"]),
        Case("gen: info on a missing path", ["nsa-gen", "info", "nope.zarr"]),
        Case("gen: info on a folder", ["nsa-gen", "info", "good"]),
        Case("gen: info, no checksums", ["nsa-gen", "info", "store_no_checksums.zarr"]),
        Case("gen: verify, no checksums", ["nsa-gen", "verify", "store_no_checksums.zarr"],
             (1, 2)),
        Case("gen: info, edited n", ["nsa-gen", "info", "store_bad_n.zarr"]),
        Case("gen: verify, edited n", ["nsa-gen", "verify", "store_bad_n.zarr"], (1, 2)),
        # nsa-train
        Case("train: missing store", [*train, "--shards", "nope.zarr", "--out", "r1",
                                      "--steps", "1"]),
        Case("train: a folder as store", [*train, "--shards", "good", "--out", "r2",
                                          "--steps", "1"]),
        Case("train: incomplete store", [*train, "--shards", "store_incomplete.zarr",
                                         "--out", "r3", "--steps", "1"]),
        Case("train: store without checksums", [*train, "--shards", "store_no_checksums.zarr",
                                                "--out", "r3b", "--steps", "1"]),
        Case("train: store with edited n", [*train, "--shards", "store_bad_n.zarr",
                                            "--out", "r3c", "--steps", "1"]),
        Case("train: neither --steps nor --epochs", [*train, "--shards", "store.zarr",
                                                     "--out", "r4"]),
        Case("train: --epochs 0", [*train, "--shards", "store.zarr", "--out", "r5",
                                   "--epochs", "0"]),
        Case("train: --lr nan", [*train, "--shards", "store.zarr", "--out", "r6", "--steps",
                                 "1", "--lr", "nan"]),
        Case("train: --lr -1", [*train, "--shards", "store.zarr", "--out", "r7", "--steps",
                                "1", "--lr", "-1"]),
        Case("train: --batch-size 0", ["nsa-train", "--no-progress", "--shards", "store.zarr",
                                       "--out", "r8", "--steps", "1", "--batch-size", "0"]),
        Case("train: --out below a file", [*train, "--shards", "store.zarr",
                                           "--out", "a_file/r", "--steps", "1"]),
        Case("train: --out an existing run", [*train, "--shards", "store.zarr", "--out", "run",
                                              "--steps", "1"]),
        Case("train: --resume a missing run", [*train, "--resume", "nope"]),
        Case("train: --resume without checkpoint", [*train, "--resume", "run_no_checkpoint"]),
        Case("train: --device tpu", [*train, "--shards", "store.zarr", "--out", "r9",
                                     "--steps", "1", "--device", "tpu"]),
        Case("train: --device cuda without GPU", [*train, "--shards", "store.zarr",
                                                  "--out", "r10", "--steps", "1",
                                                  "--device", "cuda"]),
        Case("train: --workers not dividing batch", [*train, "--shards", "store.zarr",
                                                         "--out", "r11", "--steps", "1",
                                                         "--workers", "3"]),
        Case("train: --lr 1e12 diverges", [*train, "--shards", "store.zarr", "--out", "r12",
                                           "--steps", "6", "--lr", "1e12"], (1,)),
        # nsa-eval
        Case("eval: missing model", [*ev_folder, "--model", "nope", "--out", "e1"]),
        Case("eval: run without model.pt", [*ev_folder, "--model", "run_no_model",
                                            "--out", "e2"]),
        Case("eval: unknown protocol", [*ev_folder, "--model", "run", "--out", "e3",
                                        "--protocol", "nope"]),
        Case("eval: --out names a file", [*ev_folder, "--model", "run", "--out", "a_file"]),
        Case("eval: --out below a file", [*ev_folder, "--model", "run", "--out", "a_file/e"]),
        Case("eval: mask of another size", ["nsa-eval", "folder", "--good", "good", "--defect",
                                            "bad", "--masks", "masks_small", "--model", "run",
                                            "--out", "e4", "--no-progress"]),
        Case("eval: folder without --defect", ["nsa-eval", "folder", "--good", "good",
                                               "--model", "run", "--out", "e5"]),
        Case("eval: zero-byte good image", ["nsa-eval", "folder", "--good", "zero_byte",
                                            "--defect", "bad", "--model", "run", "--out", "e6",
                                            "--no-progress"]),
        Case("eval: mvtec missing root", ["nsa-eval", "mvtec", "--root", "nope", "--category",
                                          "bottle", "--model", "run", "--out", "e7"]),
        Case("eval: mvtec mask of another size", ["nsa-eval", "mvtec", "--root",
                                                  "mvtec_wrong_mask", "--category", "bottle",
                                                  "--model", "run", "--out", "e8",
                                                  "--no-progress"]),
        Case("eval: elpv unknown type", ["nsa-eval", "elpv", "--type", "x", "--model", "run",
                                         "--out", "e9"]),
        Case("eval: --batch-size 0", [*ev_folder, "--model", "run", "--out", "e10",
                                      "--batch-size", "0"]),
        Case("predict: empty folder", ["nsa-eval", "predict", "--images", "empty", "--model",
                                       "run", "--out", "p1", "--no-progress"]),
        Case("predict: zero-byte image", ["nsa-eval", "predict", "--images", "zero_byte",
                                          "--model", "run", "--out", "p2", "--no-progress"]),
        Case("predict: text file named .png", ["nsa-eval", "predict", "--images", "not_image",
                                               "--model", "run", "--out", "p3",
                                               "--no-progress"]),
        # nsa-pipeline
        Case("pipeline: missing config", [*run, "nope.toml"]),
        Case("pipeline: a folder as config", [*run, "cfg_dir.toml"]),
        Case("pipeline: non-UTF-8 config", [*run, "cfg_binary.toml"]),
        Case("pipeline: TOML syntax error", [*run, "cfg_syntax.toml"]),
        Case("pipeline: n = \"abc\"", [*run, "cfg_n_abc.toml"]),
        Case("pipeline: generate = 5", [*run, "cfg_generate_5.toml"]),
        Case("pipeline: categories a string", [*run, "cfg_categories_str.toml",
                                               "--out", "pl1"]),
        Case("pipeline: unknown [source] key", [*run, "cfg_unknown_key.toml", "--out", "pl2"]),
        Case("pipeline: bad protocol", [*run, "cfg_bad_protocol.toml", "--out", "pl3"]),
        Case("pipeline: steps = 0", [*run, "cfg_steps_0.toml", "--out", "pl4"]),
    ]


def verdict(case: Case, result: subprocess.CompletedProcess | None) -> str:
    """'handled' or what went wrong (see the module docstring)."""
    if result is None:
        return "hang"
    stderr = result.stderr
    if "Traceback" in stderr:
        return "traceback"
    if result.returncode not in case.codes:
        return f"exit {result.returncode}"
    if result.returncode == 2 and stderr.startswith("Usage: "):
        return "handled"  # typer's own usage error: a missing or malformed option
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if len(errors) != 1:
        return f"{len(errors)} error lines"
    return "handled"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="Run the cases whose name contains this.")
    parser.add_argument("--keep", type=Path, help="Build the scratch folder here and keep it.")
    args = parser.parse_args()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="nsa-bad-inputs-"))
    scratch.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    try:
        if not (scratch / "run" / "model.pt").exists():
            build_scratch(scratch)
        tally: Counter[str] = Counter()
        for case in cases(server.server_address[1]):
            if args.only not in case.name:
                continue
            start = time.perf_counter()
            try:
                result = _run(case.argv, scratch, env=env)
            except subprocess.TimeoutExpired:
                result = None
            outcome = verdict(case, result)
            tally[outcome] += 1
            line = "" if result is None else next(
                (s for s in reversed(result.stderr.splitlines()) if s.strip()), "")
            print(f"{outcome:<14} {time.perf_counter() - start:5.1f}s  {case.name:<42} "
                  f"{line[:110]}", flush=True)
        total = sum(tally.values())
        print(f"\nhandled with one line: {tally['handled']} of {total}; "
              + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items()) if k != "handled"))
    finally:
        server.shutdown()
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
