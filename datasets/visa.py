"""VisA as released: ``split_csv/1cls.csv`` names every image of every object.

Columns ``object, split, label, image, mask`` (paths relative to the root); images lie in
``<object>/Data/Images/{Normal,Anomaly}/``, masks in ``<object>/Data/Masks/Anomaly/`` and
hold class ids (non-zero = defect). Training uses the rows ``split = train`` labelled
``normal``; the test set is the rows ``split = test``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from nsa.datasets.base import GENERIC_PRESET, category_dataset
from nsa.evaluate.testsets import TestImage, TestSet
from nsa.generate.sources import Source, SourceError, existing_dir

CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
              "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum")
SPLIT_CSV = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}
TITLE = "VisA"


def _rows(root: Path, category: str, split: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of ``category``'s rows of ``split`` in the root's 1cls.csv."""
    root = existing_dir(root, "VisA root")
    table = root / SPLIT_CSV
    if not table.is_file():
        raise SourceError(f"{table}: not found; expected VisA as released ({SPLIT_CSV} beside "
                          "the object folders)")
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SourceError(f"{table}: no column(s) {', '.join(missing)}; expected "
                              f"{', '.join(COLUMNS)}")
        rows = [(reader.line_num, row) for row in reader]
    objects = sorted({row["object"] for _, row in rows})
    if category not in objects:
        raise SourceError(f"{table}: no object {category!r}; objects: {', '.join(objects)}")
    chosen = []
    for line, row in rows:
        if row["object"] != category or row["split"] != split:
            continue
        if row["label"] not in LABELS:
            raise SourceError(f"{table}:{line}: label {row['label']!r} is not normal or anomaly")
        chosen.append((line, row))
    if not chosen:
        raise SourceError(f"{table}: no {split} rows for object {category!r}")
    return chosen


def _file(root: Path, line: int, name: str, what: str) -> Path:
    path = Path(root) / name
    if not name or not path.is_file():
        raise SourceError(f"{Path(root) / SPLIT_CSV}:{line}: {what} "
                          f"{path if name else '(empty)'} does not exist")
    return path


def visa_source(root: Path, category: str) -> Source:
    """The normal training images of ``category`` (csv order)."""
    files = [_file(root, line, row["image"], "image")
             for line, row in _rows(root, category, "train") if row["label"] == "normal"]
    if not files:
        raise SourceError(f"{Path(root) / SPLIT_CSV}: no normal train images of {category!r}")
    return Source("visa", f"VisA {category} train split of {SPLIT_CSV} under {root}", files,
                  GENERIC_PRESET)


def visa_testsets(root: Path, category: str) -> list[TestSet]:
    """The test rows of ``category``: normal against anomaly, every anomaly with its mask."""
    images = []
    for line, row in _rows(root, category, "test"):
        path = _file(root, line, row["image"], "image")
        if row["label"] == "normal":
            images.append(TestImage(path, 0))
        else:
            images.append(TestImage(path, 1, "anomaly", _file(root, line, row["mask"], "mask")))
    return [TestSet(category, f"VisA {category} test split of {SPLIT_CSV} in {root}", images,
                    has_masks=True).check()]


VISA = category_dataset(
    "visa", TITLE,
    "VisA as released: the objects' images and masks named in ROOT/split_csv/1cls.csv.",
    CATEGORIES, visa_source, visa_testsets,
    default_preset=lambda category: GENERIC_PRESET,
    train_folders=("Data/Images/Normal",),
)
