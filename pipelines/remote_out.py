"""A pipeline whose output root is an ``s3://`` URL, for clusters without a shared file system.

The stages read and write local folders (nsa-train's checkpoints, nsa-eval's pictures),
so with ``out = "s3://BUCKET/PREFIX"`` each process works in a local copy of the part of
the output it needs, its *staging folder* under its own temporary folder (the driver's is
:func:`staging_root`; each train-and-evaluate task makes one of its own on the node Ray
runs it on, and removes it whole), and the bucket is the record:

- A job whose training and evaluation are both done in the bucket with the same settings
  (markers, the run's model and config, the metrics) is taken as it is: only its markers
  and metrics are copied down.
- Before a job's stages run (the driver's generate, and the train-and-evaluate task on
  whichever node Ray runs it), :func:`fetch_job` empties the job's staging folder and
  copies down its stage markers, ``run/`` when training has started (with its checkpoint
  only while training is unfinished, so that it resumes exactly, on any node) and
  ``eval/metrics.json`` when the evaluation is done.
- Afterwards, also when a stage failed, :func:`send_job` sends back the work of every
  stage whose marker changed: first its output folder (``run/``, ``eval/``), replacing
  the bucket's, and the evaluation's thresholds in ``run/calibration.json``, then the
  marker. A stage writes its marker as done only after its
  outputs, and the marker goes up after them, so a marker in the bucket never claims more
  than the bucket holds. A process killed before it sends loses only its own work.
- The pipeline log and the summary tables are copied down first and sent back last by
  the driver (:func:`fetch_files`, :func:`send_files`).

Stores are not staged: without ``[generate] stores`` they go to
``OUT/<category>/seed<k>/shards.zarr`` in the bucket, which ``nsa-gen`` and ``nsa-train``
read and write directly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nsa.evaluate.calibration import CALIBRATION_FILE
from nsa.train.checkpoint import CHECKPOINT_FILE

from nsa.locations import S3Location, parse_location, s3_failures

#: Stage -> the folder of its output inside a job's folder (generate's is the store).
OUTPUTS = {"train": "run", "evaluate": "eval"}
#: Files a stage writes outside its own folder: the evaluation of a layout that calibrates
#: (ELPV) records its thresholds in the run.
ALSO_WRITES = {"evaluate": (f"run/{CALIBRATION_FILE}",)}
#: What a run's checkpoints are named (``checkpoint.pt``): fetched only to resume.
CHECKPOINT_STEM = Path(CHECKPOINT_FILE).stem
STAGES = ("generate", "train", "evaluate")

Markers = dict[str, bytes | None]


def staging_root(url: str) -> Path:
    """The local folder standing for output root ``url`` on this machine."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "nsa-pipeline" / digest


def _location(url: str, relative: str) -> S3Location:
    location = parse_location(f"{url.rstrip('/')}/{relative}")
    assert isinstance(location, S3Location)
    return location


def _marker_bytes(job_dir: Path) -> Markers:
    found: Markers = {}
    for stage in STAGES:
        try:
            found[stage] = (job_dir / f"{stage}.json").read_bytes()
        except FileNotFoundError:
            found[stage] = None
    return found


def fetch_job(url: str, relative: str, job_dir: Path, outputs: bool = True) -> Markers:
    """Make ``job_dir`` the staging copy of job folder ``url/relative`` (without
    ``outputs``, its markers alone); return the markers' bytes as fetched (None: no
    marker), for :func:`send_job`.

    Raises :class:`~nsa.errors.OutputError` (one line) when the server stops answering.
    """
    location = _location(url, relative)
    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    with s3_failures(location):
        keys = location.list_keys()
        markers = {f"{stage}.json" for stage in STAGES} & set(keys)
        _get(location, job_dir, sorted(markers))
        fetched = _marker_bytes(job_dir)
        if outputs and fetched["train"] is not None:
            finished = _done(fetched["train"])  # then no checkpoint is needed
            _get(location, job_dir, [
                key for key in keys if key.startswith("run/")
                and not (finished and key.startswith(f"run/{CHECKPOINT_STEM}"))])
        if outputs and fetched["evaluate"] is not None and "eval/metrics.json" in keys:
            _get(location, job_dir, ["eval/metrics.json"])
    return fetched


def _get(location: S3Location, job_dir: Path, keys: list[str]) -> None:
    fs = location.filesystem()
    for key in keys:
        (job_dir / key).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{location.fs_path}/{key}", str(job_dir / key))


def send_job(url: str, relative: str, job_dir: Path, fetched: Markers) -> list[str]:
    """Send back the work of each stage whose marker in ``job_dir`` differs from
    ``fetched`` or is not done (a training interrupted again has a newer checkpoint under
    the same marker): its output folder (replacing the bucket's) then its marker. Returns
    those stages. Raises :class:`~nsa.errors.OutputError` when the server stops answering."""
    location = _location(url, relative)
    now = _marker_bytes(job_dir)
    changed = [stage for stage, before in fetched.items()
               if now[stage] is not None and (now[stage] != before or not _done(now[stage]))]
    with s3_failures(location):
        fs = location.filesystem()
        for stage in changed:
            folder = OUTPUTS.get(stage)
            if folder is not None:
                old = [f"{location.fs_path}/{key}" for key in location.list_keys()
                       if key.startswith(f"{folder}/")]
                if old:
                    fs.rm(old)
                _put_tree(fs, job_dir / folder, f"{location.fs_path}/{folder}")
            for extra in ALSO_WRITES.get(stage, ()):
                if (job_dir / extra).is_file():
                    fs.put_file(str(job_dir / extra), f"{location.fs_path}/{extra}")
            fs.put_file(str(job_dir / f"{stage}.json"), f"{location.fs_path}/{stage}.json")
    return changed


def _done(marker: bytes | None) -> bool:
    try:
        return bool(json.loads(marker or b"{}").get("done"))
    except (ValueError, AttributeError):
        return False


def _put_tree(fs: Any, folder: Path, prefix: str) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{prefix}/{path.relative_to(folder).as_posix()}")


def fetch_files(url: str, root: Path, names: Iterable[str]) -> None:
    """Copy the objects ``url/NAME`` that exist into ``root/NAME``."""
    location = parse_location(url)
    assert isinstance(location, S3Location)
    with s3_failures(location):
        fs = location.filesystem()
        for name in names:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get_file(f"{location.fs_path}/{name}", str(root / name))
            except FileNotFoundError:
                continue


def present(url: str, relative: str, keys: Iterable[str]) -> bool:
    """Whether every object ``url/relative/KEY`` exists (one listing, nothing copied)."""
    location = _location(url, relative)
    with s3_failures(location):
        return set(keys) <= set(location.list_keys())


def send_files(url: str, root: Path, names: Iterable[str]) -> list[str]:
    """Send the files ``root/NAME`` that exist to ``url/NAME``; return their URLs."""
    location = parse_location(url)
    assert isinstance(location, S3Location)
    sent = []
    with s3_failures(location):
        fs = location.filesystem()
        for name in names:
            if (root / name).is_file():
                fs.put_file(str(root / name), f"{location.fs_path}/{name}")
                sent.append(f"{url.rstrip('/')}/{name}")
    return sent
