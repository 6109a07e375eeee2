"""Stage markers: how a re-run knows which stages already finished with the same settings.

Each stage of a job writes ``<job>/<stage>.json`` holding a hash of everything that
determines its output (its own settings and the hashes of the stages it reads from),
``done``, and, once done, ``output``: a fresh id of this particular output. A stage that
reads another's output records that id as its ``input``. A stage's state is:

- DONE when its marker is done with the same hash and the same input id (the caller
  then still checks that its output files exist and are complete);
- INTERRUPTED when the marker has the same hash and input but is not done: it may resume;
- FRESH otherwise: never started, other settings, or an input that was made again since
  (a deleted store was regenerated, so the run trained on the old one is stale).

Markers are written atomically (write, then rename), so a kill never leaves a marker
that claims more than was finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from enum import Enum
from pathlib import Path
from typing import Any

from nsa.errors import writing


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


def read_marker(job_dir: Path, stage: str) -> dict[str, Any]:
    """The marker of ``stage`` (``{}`` when there is none or it is unreadable)."""
    try:
        marker = json.loads(marker_path(job_dir, stage).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def output_id(job_dir: Path, stage: str) -> str | None:
    """The id of the finished output of ``stage``, or None when it is not done."""
    marker = read_marker(job_dir, stage)
    return marker.get("output") if marker.get("done") else None


def stage_state(job_dir: Path, stage: str, digest: str, input_id: str | None = None
                ) -> StageState:
    """Where ``stage`` of the job in ``job_dir`` stands for settings hashed to ``digest``
    reading the upstream output ``input_id`` (None for the first stage)."""
    marker = read_marker(job_dir, stage)
    if marker.get("hash") != digest or marker.get("input") != input_id:
        return StageState.FRESH
    return StageState.DONE if marker.get("done") else StageState.INTERRUPTED


def write_marker(job_dir: Path, stage: str, digest: str, done: bool,
                 input_id: str | None = None, **info: Any) -> None:
    """Record that ``stage`` started (``done=False``) or finished (``done=True``, with a
    new output id) with settings ``digest`` on the upstream output ``input_id``."""
    path = marker_path(job_dir, stage)
    marker = {"hash": digest, "done": done, "input": input_id, **info}
    if done:
        marker["output"] = uuid.uuid4().hex
    tmp = path.with_suffix(".json.tmp")
    with writing(path):
        job_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(marker, indent=2, default=str))
        os.replace(tmp, path)
