"""The ``--out`` folder of ``nsa-eval``: what it may write into, and how a new output
replaces an earlier one.

Before anything else, an evaluation or a prediction writes ``nsa-eval.json`` into
``--out``: which command wrote the folder and the names it writes there. A folder holding
that file is therefore an nsa-eval output, finished or interrupted, and the next
``nsa-eval`` into it first removes exactly those names (``maps/`` as a whole) and nothing
else, so new pictures never sit beside earlier ones and a user's own files beside them
stay. Only names nsa-eval writes are ever removed, whatever the file lists. A finished
output of a version before that file (its ``metrics.json`` or ``predict.json`` records
nsa-pipeline's version) counts as one too. Any other non-empty folder is refused:
nsa-eval does not write among files it did not write.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from nsa.evaluate.report import REPORT_FILE
from nsa.evaluate.tables import write_text_atomic

from nsa.errors import UserError, writing

MARK_FILE = "nsa-eval.json"
#: What each command writes into ``--out``, the record of a finished output first (it is
#: removed first, so a half-cleared folder never looks finished).
OUTPUTS = {
    "evaluate": ("metrics.json", "metrics.csv", "metrics.md", "maps", "curves.png",
                 REPORT_FILE),
    "predict": ("predict.json", "scores.csv", "maps", REPORT_FILE),
}
_KNOWN = {name for names in OUTPUTS.values() for name in names}


def check_out(out: Path) -> None:
    """Refuse (UserError) an ``--out`` that is a file, a non-empty folder that is not an
    nsa-eval output, or one whose ``nsa-eval.json`` is unreadable; touches nothing."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and _earlier(out) is None:  # also: an unreadable mark, before any work
        first = min((entry.name for entry in out.iterdir()), default=None)
        if first is not None:
            raise UserError(f"--out {out}: a folder that is not an nsa-eval output (it holds "
                            f"{first}): choose another --out or empty it")


def _earlier(out: Path) -> list[str] | None:
    """The names of the earlier nsa-eval output in ``out``: those its ``nsa-eval.json``
    lists, or, for a finished output of a version before that file (a ``metrics.json`` or
    ``predict.json`` recording nsa-pipeline's version), what that command writes. None
    when ``out`` holds no nsa-eval output."""
    mark = out / MARK_FILE
    if mark.is_file():
        return _listed(mark)
    for names in OUTPUTS.values():
        try:
            record = json.loads((out / names[0]).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "nsa-pipeline" in (record.get("versions") or {}):
            return list(names)
    return None


def replace_output(out: Path, command: str) -> None:
    """Make ``out`` ready for ``command``'s output ('evaluate' or 'predict'): create it,
    remove an earlier nsa-eval output's names from it and write ``nsa-eval.json``.

    Until the removal is done the mark lists the earlier names too, so an interrupted
    removal is finished by the next run. Call :func:`check_out` first. Raises UserError
    for an unreadable ``nsa-eval.json``, OutputError (via ``writing``) when a write fails.
    """
    mark = out / MARK_FILE
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        earlier = _earlier(out) or []
        _write_mark(mark, command, list(dict.fromkeys([*earlier, *OUTPUTS[command]])))
        for name in earlier:
            _remove(out / name)
    _write_mark(mark, command, list(OUTPUTS[command]))


def _listed(mark: Path) -> list[str]:
    """The names an earlier output's mark lists, only those nsa-eval writes."""
    try:
        names = json.loads(mark.read_text())["outputs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{mark}: unreadable ({exc!r}); remove it to write into "
                        f"{mark.parent}") from None
    if not isinstance(names, list):
        raise UserError(f"{mark}: 'outputs' is not a list of names; remove it to write into "
                        f"{mark.parent}")
    return [name for name in names if isinstance(name, str) and name in _KNOWN]


def _write_mark(mark: Path, command: str, names: Sequence[str]) -> None:
    record = {"written_by": f"nsa-eval {command}", "outputs": list(names)}
    write_text_atomic(mark, json.dumps(record, indent=2) + "\n")


def _remove(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a folder tree, if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
