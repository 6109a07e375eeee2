"""Stage markers: how a re-run knows which stages already finished with the same settings.

Each stage of a job writes ``<job>/<stage>.json`` holding a hash of everything that
determines its output (its own settings and the hashes of the stages it reads from) and
``done``. A stage is skipped when its marker is done with the same hash; a marker with the
same hash that is not done means the stage was interrupted and may resume; a different
hash means the old output belongs to other settings and is redone from scratch.
Markers are written atomically (write, then rename), so a kill never leaves a marker
that claims more than was finished.
"""

from __future__ import annotations

import hashlib
import json
import os
from enum import Enum
from pathlib import Path
from typing import Any


class StageState(Enum):
    DONE = "done"  # finished with these settings: skip
    INTERRUPTED = "interrupted"  # started with these settings: resume
    FRESH = "fresh"  # never started, or started with other settings: redo


def settings_hash(settings: dict[str, Any]) -> str:
    """A stable hash of JSON-serialisable settings (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def marker_path(job_dir: Path, stage: str) -> Path:
    return job_dir / f"{stage}.json"


def stage_state(job_dir: Path, stage: str, digest: str) -> StageState:
    """Where ``stage`` of the job in ``job_dir`` stands for settings hashed to ``digest``."""
    path = marker_path(job_dir, stage)
    try:
        marker = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return StageState.FRESH
    if marker.get("hash") != digest:
        return StageState.FRESH
    return StageState.DONE if marker.get("done") else StageState.INTERRUPTED


def write_marker(job_dir: Path, stage: str, digest: str, done: bool, **info: Any) -> None:
    """Record that ``stage`` started (``done=False``) or finished (``done=True``)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    path = marker_path(job_dir, stage)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"hash": digest, "done": done, **info}, indent=2, default=str))
    os.replace(tmp, path)
