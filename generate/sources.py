"""Where the normal images come from: MVTec-style category folders, NIH ChestX-ray14
lists, any folders, ELPV. (Which layout uses which is :mod:`nsa.datasets`' registry.)

A :class:`Source` is only a list of image files plus what to call them; what counts as an
image file (any format OpenCV decodes, suffix in any letter case), reading and resizing
are :mod:`nsa.generate.images`' job. Every constructor checks what it can before
any work starts (the root exists, the category exists, the list names existing files, the
folder holds images) and raises a one-line :class:`~nsa.errors.UserError` otherwise.

:func:`elpv_split` is THE split of the ELPV solar cells into training and test images;
evaluation imports it, so the held-out cells can never leak into training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from nsa.generate.images import image_files

from nsa.errors import UserError

ELPV_TYPES = ("mono", "poly")
ELPV_SPLITS = ("train", "test_good", "test_defect")
#: ELPV cells with at least this defect probability are the defective test images.
ELPV_DEFECT_PROBABILITY = 0.66
#: Of the functional cells of a type, sorted by file name, those at positions divisible
#: by this are held out for testing.
ELPV_HOLDOUT_EVERY = 4


class SourceError(UserError):
    """A source that cannot give images: missing root, unknown category, empty, ..."""


@dataclass(frozen=True)
class Source:
    """A list of normal images and how to name them in a store's attributes.

    ``default_preset`` is the preset used when the user names none (``None`` for a plain
    folder, where the user must choose).
    """

    kind: str
    description: str
    files: list[Path]
    default_preset: str | None

    def attrs(self) -> dict[str, Any]:
        """The store attribute ``source``: kind, description and every file (absolute
        path) with its SHA-256, in order (stored ``dest_index``/``source_index`` index
        this list)."""
        return {
            "kind": self.kind,
            "description": self.description,
            "files": [{"path": str(f.absolute()), "sha256": file_sha256(f)} for f in self.files],
        }


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (identifies a source image whatever its name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def existing_dir(root: Path | str, what: str) -> Path:
    """``root`` as a Path; SourceError naming it when it is missing or not a folder."""
    root = Path(root)
    if not root.exists():
        raise SourceError(f"{root}: {what} does not exist")
    if not root.is_dir():
        raise SourceError(f"{root}: {what} is not a directory")
    return root


def mvtec_source(root: Path | str, category: str) -> Source:
    """Training images of one MVTec AD category: every image file in
    ``root/category/train/good/`` (``*.png`` in the release; any image format here)."""
    return layout_source("mvtec", "MVTec AD", root, category, category)


def layout_source(kind: str, title: str, root: Path | str, category: str,
                  default_preset: str | None, train: Sequence[str] = ("train/good",)) -> Source:
    """Training images of ``category`` of an MVTec-style layout: every image file in the
    first folder of ``train`` (relative to ``root/category``) that exists.

    ``title`` names the dataset in messages ("MVTec AD"). Raises SourceError naming the
    root, the category (with those found: folders holding one of ``train``) or the folder.
    """
    root = existing_dir(root, f"{title} root")
    if not (root / category).is_dir():
        found = categories_found(root, train)
        hint = f"; categories found: {', '.join(found)}" if found else "; no categories found"
        raise SourceError(f"{root}: no category {category!r}{hint}")
    good = next((root / category / t for t in train if (root / category / t).is_dir()),
                root / category / train[0])
    try:
        files = image_files(good)
    except UserError as exc:
        raise SourceError(f"no training images: {exc}") from None
    where = good.relative_to(root / category).as_posix()
    return Source(kind, f"{title} {category} {where} under {root}", files, default_preset)


def categories_found(root: Path, train: Sequence[str] = ("train/good",)) -> list[str]:
    """Names of the folders in ``root`` that hold one of the ``train`` folders, sorted."""
    return sorted(p.name for p in root.iterdir() if any((p / t).is_dir() for t in train))


def chestxray_source(root: Path | str, list_file: Path | str) -> Source:
    """NIH ChestX-ray14 images under ``root`` named one per line in ``list_file``.

    A name is looked up as ``root/name`` and, failing that, anywhere below ``root`` (the
    NIH release spreads images over ``images_001/images`` ... folders).
    """
    root = existing_dir(root, "ChestX-ray root")
    list_file = Path(list_file)
    if not list_file.is_file():
        raise SourceError(f"{list_file}: list file does not exist")
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    if not names:
        raise SourceError(f"{list_file}: list file names no images")
    direct = [root / name for name in names]
    if all(path.is_file() for path in direct):
        files = direct
    else:
        found = {p.name: p for p in root.rglob("*") if p.is_file()}
        files = [path if path.is_file() else found.get(path.name) for path in direct]
    missing = [name for name, path in zip(names, files, strict=True) if path is None]
    if missing:
        raise SourceError(
            f"{list_file}: {len(missing)} of {len(names)} listed images are missing under "
            f"{root}, first: {missing[0]}"
        )
    return Source("chestxray", f"ChestX-ray14 images in {list_file} under {root}",
                  files, "chestxray")


def folder_source(roots: Path | str | Sequence[Path | str]) -> Source:
    """Every image file below each of ``roots`` (recursive; any image file, see
    :func:`nsa.generate.images.is_image_file`), sorted by path within each root, roots in
    the order given."""
    roots = [roots] if isinstance(roots, str | Path) else list(roots)
    if not roots:
        raise SourceError("--root: give at least one folder of images")
    files: list[Path] = []
    for root in roots:
        root = existing_dir(root, "image folder")
        try:
            files += image_files(root, recursive=True)
        except UserError as exc:
            raise SourceError(str(exc)) from None
    return Source("folder", f"images under {', '.join(map(str, roots))}", files, None)


class ElpvSplit(NamedTuple):
    """ELPV cells of one type: training images and the two kinds of test images."""

    train: list[Path]
    test_good: list[Path]
    test_defect: list[Path]


def elpv_data_dir() -> Path:
    """The ``data`` folder of the installed ``elpv-dataset`` package."""
    try:
        import elpv_dataset
    except ImportError:
        raise SourceError(
            "the ELPV images need the package elpv-dataset: pip install 'nsa-pipeline[demo]'"
        ) from None
    return Path(elpv_dataset.__file__).parent / "data"


def elpv_split(cell_type: str) -> ElpvSplit:
    """THE ELPV split for ``cell_type`` ('mono' or 'poly').

    Functional cells (defect probability 0.0) of that type, sorted by file name, go to
    ``train`` except those at positions divisible by 4, which are ``test_good``;
    ``test_defect`` holds the cells with probability >= 0.66, sorted by file name.
    """
    if cell_type not in ELPV_TYPES:
        raise SourceError(f"unknown ELPV cell type {cell_type!r}; choose mono or poly")
    data = elpv_data_dir()
    labels = data / "labels.csv"
    good, defect = [], []
    for line_no, line in enumerate(labels.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            name, probability, kind = line.split()
            probability = float(probability)
        except ValueError:
            raise SourceError(f"{labels}:{line_no}: not 'path probability type'") from None
        if kind != cell_type:
            continue
        if probability == 0.0:
            good.append(data / name)
        elif probability >= ELPV_DEFECT_PROBABILITY:
            defect.append(data / name)
    good.sort(key=lambda p: p.name)
    defect.sort(key=lambda p: p.name)
    train = [p for i, p in enumerate(good) if i % ELPV_HOLDOUT_EVERY != 0]
    test_good = [p for i, p in enumerate(good) if i % ELPV_HOLDOUT_EVERY == 0]
    return ElpvSplit(train, test_good, defect)


def elpv_source(cell_type: str, split: str = "train") -> Source:
    """One part of :func:`elpv_split` as a source (training uses ``split='train'``)."""
    if split not in ELPV_SPLITS:
        raise SourceError(f"unknown ELPV split {split!r}; choose one of {', '.join(ELPV_SPLITS)}")
    files = getattr(elpv_split(cell_type), split)
    return Source("elpv", f"ELPV {cell_type} cells, {split} split (elpv-dataset)", files, "elpv")
