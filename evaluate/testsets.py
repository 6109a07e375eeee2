"""Labelled test sets: which images are good, which defective, and where their masks are.

A :class:`TestSet` is only a list of files with labels; nothing is decoded here, so a
wrong layout is reported before any model runs. Finders:

- :func:`mvtec_testset`: ``C/test/good``, ``C/test/<defect>/``, masks at
  ``C/ground_truth/<defect>/<name>_mask.png``; a defect image without its mask is an error
  (:func:`layout_testset`: the same for other datasets in this layout).

Image files and masks are recognised by :mod:`nsa.generate.images`' one rule (any format
OpenCV decodes, suffix in any letter case; a mask ``<stem>_mask.<any image suffix>``).
- :func:`chestxray_testset`: two image lists (normal, anomalous), image level only; files
  are found by ``nsa-gen``'s own rule (:func:`nsa.generate.sources.chestxray_source`).
- :func:`folder_testset`: good folders and defect folders, masks optional.

Layouts of other datasets (VisA, MVTec LOCO, ...) build their sets in :mod:`nsa.datasets`.
- :func:`elpv_testset`: the held-out functional cells against the defective ones, by the
  one ELPV split rule (:func:`nsa.generate.sources.elpv_split`); image level only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nsa.generate.images import (
    IMAGE_SUFFIXES,
    MASK_STEMS,
    find_mask,
    image_files,
    mask_names_tried,
    read_image,
    read_mask,
)
from nsa.generate.sources import chestxray_source, elpv_split

from nsa.errors import UserError

GOOD = "good"


@dataclass(frozen=True)
class TestImage:
    """One test image: its file, label (0 good, 1 defective), defect type and mask file.

    ``mask`` is None for good images (their ground truth is all defect-free) and for every
    image of a set without masks. ``extra_masks``: further mask files of the same image
    (MVTec LOCO splits some ground truths); the ground truth is the union of all of them.
    """

    __test__ = False  # a name pytest would otherwise try to collect

    path: Path
    label: int
    defect: str = GOOD
    mask: Path | None = None
    extra_masks: tuple[Path, ...] = ()


@dataclass(frozen=True)
class TestSet:
    """A named, labelled test set: one row of the tables.

    ``paper_key`` (dataset, row) selects the published figures to show beside ours, when
    the paper has them.
    """

    __test__ = False

    name: str
    description: str
    images: list[TestImage]
    has_masks: bool
    paper_key: tuple[str, str] | None = None

    @property
    def n_good(self) -> int:
        return sum(1 for image in self.images if image.label == 0)

    @property
    def n_defect(self) -> int:
        return sum(1 for image in self.images if image.label == 1)

    def check(self) -> TestSet:
        """Refuse a set that cannot be scored: no good or no defective image."""
        if self.n_good == 0:
            raise UserError(f"{self.description}: no good test images")
        if self.n_defect == 0:
            raise UserError(f"{self.description}: no defective test images")
        return self


def mvtec_testset(root: str | Path, category: str) -> TestSet:
    """The test split of one MVTec AD category under ``root``."""
    return layout_testset(root, category, "MVTec AD", paper_key=("mvtec", category))


def layout_testset(root: str | Path, category: str, title: str, *, good: Sequence[str] = (GOOD,),
                   paper_key: tuple[str, str] | None = None) -> TestSet:
    """The test split of ``category`` in the MVTec AD layout of dataset ``title``:
    ``test/<good>`` (the first of ``good`` that exists) against every other folder of
    ``test/``, masks ``ground_truth/<defect>/<name>_mask.<ext>`` or ``<name>.<ext>``.

    Raises UserError naming the missing test folder, or a defect image without its mask.
    """
    base = Path(root) / category
    test = base / "test"
    if not test.is_dir():
        raise UserError(
            f"{test}: not found; expected the {title} layout {category}/test/{good[0]}, "
            f"{category}/test/<defect>/ and {category}/ground_truth/<defect>/<name>_mask.png"
        )
    good_dir = next((test / g for g in good if (test / g).is_dir()), test / good[0])
    images = [TestImage(path, 0) for path in image_files(good_dir)]
    defects = sorted(p for p in test.iterdir() if p.is_dir() and p.name not in good)
    for folder in defects:
        for path in image_files(folder):
            truth = [base / "ground_truth" / folder.name]
            mask = find_mask(path, truth)
            if mask is None:
                raise UserError(f"{path}: defect image without a mask; looked for "
                                f"{mask_names_tried(path, truth)}")
            images.append(TestImage(path, 1, folder.name, mask))
    return TestSet(
        name=category, description=f"{title} {category} test split in {Path(root)}",
        images=images, has_masks=True, paper_key=paper_key,
    ).check()


def chestxray_testset(
    root: str | Path, normal_list: str | Path, anomaly_list: str | Path, name: str | None = None
) -> TestSet:
    """Normal against anomalous chest X-rays named in two list files, image level only.

    The row is named after the lists' subset (``chestxray-male``/``chestxray-female`` for
    the paper's curated lists, whose figures are then shown beside ours) unless ``name``.
    """
    normal = chestxray_source(root, normal_list).files
    anomalous = chestxray_source(root, anomaly_list).files
    subset = _chestxray_subset(Path(anomaly_list).name)
    images = [TestImage(Path(p), 0) for p in normal]
    images += [TestImage(Path(p), 1, "anomaly") for p in anomalous]
    return TestSet(
        name=name or (f"chestxray-{subset}" if subset else "chestxray"),
        description=f"chest X-rays in {Path(root)}: normal {normal_list}, anomalous {anomaly_list}",
        images=images, has_masks=False,
        paper_key=("chestxray", subset) if subset else None,
    ).check()


def _chestxray_subset(list_name: str) -> str | None:
    """'female' or 'male' from the paper's curated list names (e.g. ...FemaleAdultPA...)."""
    lowered = list_name.lower()
    if "female" in lowered:
        return "female"
    if "male" in lowered:
        return "male"
    return None


def folder_testset(
    good: str | Path | Sequence[str | Path],
    defects: Sequence[str | Path],
    masks: str | Path | None = None,
    name: str | None = None,
    mask_pattern: str | None = None,
) -> TestSet:
    """Good images in one or several folders against defective images in ``defects``.

    With ``masks``, every defect image needs a mask named ``<stem>_mask.<suffix>`` or
    ``<stem>.<suffix>`` (or ``mask_pattern`` with ``{stem}``, e.g. ``{stem}_gt``; any image
    suffix, any letter case), in ``masks/<defect folder name>/`` or directly in ``masks/``.
    The row is named ``name``, else after the (first) good folder's parent.
    """
    goods = [Path(good)] if isinstance(good, str | Path) else [Path(g) for g in good]
    if not goods:
        raise UserError("--good: give at least one folder of good images")
    if not defects:
        raise UserError("--defect: give at least one folder of defective images")
    if masks is not None and not Path(masks).is_dir():
        raise UserError(f"{masks}: no such folder")
    stems = MASK_STEMS if mask_pattern is None else (mask_stem(mask_pattern),)
    images = [TestImage(path, 0) for folder in goods for path in image_files(folder)]
    for folder in map(Path, defects):
        for path in image_files(folder):
            mask = (_find_mask(Path(masks), folder.name, path, stems) if masks is not None
                    else None)
            images.append(TestImage(path, 1, folder.name, mask))
    return TestSet(
        name=name or goods[0].resolve().parent.name or "folder",
        description=f"good images in {', '.join(map(str, goods))}, defective in "
        f"{', '.join(map(str, defects))}" + (f", masks in {masks}" if masks is not None else ""),
        images=images, has_masks=masks is not None,
    ).check()


def mask_stem(pattern: str) -> str:
    """``--mask-pattern`` as a file stem with ``{stem}``: ``{stem}_gt.png`` -> ``{stem}_gt``
    (a mask may have any image suffix). UserError unless it holds ``{stem}`` and nothing
    else in braces."""
    stem = pattern
    for suffix in IMAGE_SUFFIXES:
        if pattern.lower().endswith(suffix):
            stem = pattern[: -len(suffix)]
    try:
        stem.format(stem="")
        ok = "{stem}" in stem
    except (KeyError, IndexError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"--mask-pattern {pattern!r}: expected a file name with {{stem}} for "
                        "the image's stem, e.g. {stem}_mask or {stem}_gt.png")
    return stem


def _find_mask(masks: Path, defect: str, image: Path, stems: Sequence[str] = MASK_STEMS
               ) -> Path:
    folders = [masks / defect, masks]
    mask = find_mask(image, folders, stems)
    if mask is None:
        raise UserError(f"{image}: defect image without a mask; looked for "
                        f"{mask_names_tried(image, folders, stems)}")
    return mask


def elpv_testset(cell_type: str) -> TestSet:
    """Held-out functional ELPV cells of ``cell_type`` against the defective ones."""
    split = elpv_split(cell_type)
    images = [TestImage(Path(p), 0) for p in split.test_good]
    images += [TestImage(Path(p), 1, "defective") for p in split.test_defect]
    return TestSet(
        name=f"elpv-{cell_type}",
        description=f"ELPV {cell_type} cells: held-out functional (probability 0) against "
        "defective (probability >= 0.66)",
        images=images, has_masks=False,
    ).check()


def check_files(testset: TestSet) -> None:
    """Refuse, before anything is written, a set naming an empty (0-byte) or unreadable
    image or mask file: one UserError naming it. (Decoding errors inside a file that is
    not empty are found when it is read.)"""
    for image in testset.images:
        for path in (image.path, image.mask, *image.extra_masks):
            if path is None:
                continue
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise UserError(f"{path}: cannot read ({exc.strerror})") from None
            if size == 0:
                raise UserError(f"{path}: empty file (0 bytes), not an image")


def read_test_image(
    image: TestImage, channels: int, has_masks: bool, white_level: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one test image at its native size and its ground truth as a bool map.

    The image is (H, W, ``channels``) uint8, scaled by ``white_level`` as the run's
    training images were (:func:`nsa.generate.images.read_image`). A mask pixel is a
    defect iff the mask holds a non-zero value there (:func:`nsa.generate.images.read_mask`),
    in any of its mask files.
    Good images of a set with masks get an all-false map. A mask of another size than its
    image is a UserError naming both.
    """
    pixels = read_image(image.path, channels=channels, white_level=white_level)
    if not has_masks:
        return pixels, None
    if image.mask is None:
        return pixels, np.zeros(pixels.shape[:2], dtype=bool)
    union = np.zeros(pixels.shape[:2], dtype=bool)
    for path in (image.mask, *image.extra_masks):
        mask = read_mask(path)
        if mask.shape != pixels.shape[:2]:
            raise UserError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{image.path} is {pixels.shape[1]}x{pixels.shape[0]}"
            )
        union |= mask
    return pixels, union
