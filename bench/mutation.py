"""Mutation testing of the modules whose numbers everything else trusts.

Runs mutmut (3.8) over ``generate/poisson.py``, ``generate/labels.py``,
``generate/shards.py`` and ``evaluate/metrics.py``, each against only its own fast test
file, and prints per module how many mutants were made, killed and survived, then the
diff of every surviving mutant (a change to the code that no test noticed).

mutmut derives a module's import name from its path under the folder it runs in
(``generate/poisson.py`` -> ``generate.poisson``), but this repository maps the import
name ``nsa.generate`` to the folder ``generate/`` (pyproject's package-dir), and the
tests import ``nsa.generate.poisson``: run in the repository root, mutmut would record no
test for any mutant. So the script stages a standard layout under
``build/mutation/`` (``nsa/``, ``nsa/generate/``, ``nsa/evaluate/``, ... copied from
their folders, plus ``tests/``), writes mutmut's settings into that folder's
``pyproject.toml`` and runs ``mutmut run`` there; mutmut's own copy goes to
``build/mutation/mutants/``. Staging copies afresh each run, so results never come from
an older tree.

    python bench/mutation.py               # whole run, 2 worker processes
    python bench/mutation.py --jobs 1      # fewer processes
    python bench/mutation.py --report-only # reprint the last run's report

Exit status 0 whatever survives: this is a measurement, not a gate. A whole run took
918 s (1,538 mutants) with 2 processes on a shared 2-core machine, 1,569 s when the
other cores were busy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"

#: Package folder of the repository -> its place in the staged standard layout.
PACKAGES = {"nsa": "nsa", "generate": "nsa/generate", "evaluate": "nsa/evaluate",
            "train": "nsa/train", "pipelines": "nsa/pipelines"}

#: Module under mutation (staged path) -> the fast tests that own it.
MODULES = {
    "nsa/generate/poisson.py": "tests/generate/test_poisson.py",
    "nsa/generate/labels.py": "tests/generate/test_labels.py",
    "nsa/generate/shards.py": "tests/generate/test_shards.py",
    "nsa/evaluate/metrics.py": "tests/evaluate/test_metrics.py",
}

#: mutmut's exit-code meanings (mutmut.stats.status_by_exit_code, 3.8.1).
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          34: "skipped", 36: "timeout", 37: "killed", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault", None: "not checked"}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def stage() -> None:
    """Copy the packages into a standard ``nsa/...`` layout with mutmut's settings."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder, target in PACKAGES.items():
        shutil.copytree(ROOT / folder, STAGE / target, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(ROOT / "tests", STAGE / "tests", ignore=ignore)
    tests = sorted(set(MODULES.values()))
    (STAGE / "pyproject.toml").write_text(
        "# written by bench/mutation.py\n"
        "[tool.mutmut]\n"
        'source_paths = ["nsa"]\n'
        f"only_mutate = {_toml_list(list(MODULES))}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-x", "-q"]\n'
        "use_git_change_detection = false\n"
        "\n[tool.pytest.ini_options]\n"
        'addopts = "--import-mode=importlib"\n')


def statuses() -> dict[str, dict[str, str]]:
    """Per staged module: mutant name -> status, from mutmut's ``.meta`` files."""
    out: dict[str, dict[str, str]] = {}
    for module in MODULES:
        meta = STAGE / "mutants" / (module + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        out[module] = {name: STATUS.get(code, "suspicious") for name, code in codes.items()}
    return out


def changed_lines(name: str, module: str) -> str:
    """The removed and added lines of one mutant against the original source.

    mutmut's own diff function, called in this process (``mutmut show`` takes seconds a
    call); it reads mutmut's settings from the working directory, so the caller has
    changed into :data:`STAGE`.
    """
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=module)
    return "\n".join(line for line in diff.splitlines()
                     if line[:1] in "+-" and not line.startswith(("+++", "---")))


def report(show_diffs: bool) -> None:
    by_module = statuses()
    columns = ("killed", "survived", "timeout", "no tests", "not checked")
    print(f"{'module':<22} {'mutants':>7} " + " ".join(f"{c:>11}" for c in columns)
          + f" {'other':>6}")
    for module, status in by_module.items():
        counts = [sum(1 for s in status.values() if s == c) for c in columns]
        print(f"{module.removeprefix('nsa/'):<22} {len(status):>7} "
              + " ".join(f"{c:>11}" for c in counts) + f" {len(status) - sum(counts):>6}")
    if not show_diffs:
        return
    os.chdir(STAGE)
    for module, status in by_module.items():
        survivors = sorted((n for n, s in status.items() if s == "survived"), key=_numbered)
        if survivors:
            print(f"\n## surviving mutants of {module.removeprefix('nsa/')} ({len(survivors)})")
        for name in survivors:
            print(f"\n{name.rsplit('.', 1)[-1]}\n{changed_lines(name, module)}")


def _numbered(name: str) -> tuple[str, int]:
    """Sort key: function, then mutant number (``x_f__mutmut_12`` after ``_2``)."""
    function, _, number = name.rpartition("_")
    return function, int(number) if number.isdigit() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutmut worker processes (2)")
    parser.add_argument("--report-only", action="store_true",
                        help="reprint the report of the last run in build/mutation")
    parser.add_argument("--no-diffs", action="store_true", help="counts only")
    args = parser.parse_args()
    if not args.report_only:
        stage()
        started = time.monotonic()
        run = subprocess.run([str(MUTMUT), "run", "--max-children", str(args.jobs)],
                             cwd=STAGE, capture_output=True, text=True, check=False)
        print(f"mutmut run --max-children {args.jobs}: exit {run.returncode}, "
              f"{time.monotonic() - started:.0f} s")
        if run.returncode != 0:
            print(run.stdout[-4000:] + run.stderr[-4000:])
            return 1
    report(show_diffs=not args.no_diffs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
