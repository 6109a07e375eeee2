"""MVTec AD 2: ``<object>/train/good/``, ``validation/good/``, ``test_public/{good,bad}/``
with masks ``test_public/ground_truth/bad/<name>_mask.png``.

Training uses ``train/good`` (``validation/good`` is left for ``nsa-eval calibrate``); the
test set is ``test_public`` (the private test sets carry no labels).
"""

from __future__ import annotations

from pathlib import Path

from nsa.datasets.base import GENERIC_PRESET, category_dataset
from nsa.evaluate.testsets import TestImage, TestSet
from nsa.generate.images import find_mask, image_files, mask_names_tried
from nsa.generate.sources import layout_source

from nsa.errors import UserError

CATEGORIES = ("can", "fabric", "fruit_jelly", "rice", "sheet_metal", "vial", "wallplugs",
              "walnuts")
TITLE = "MVTec AD 2"


def test_public(root: Path, category: str) -> list[TestSet]:
    """``test_public/good`` against ``test_public/bad`` of ``category``, every bad image
    with its mask; UserError naming the missing folder or mask."""
    public = Path(root) / category / "test_public"
    if not public.is_dir():
        raise UserError(f"{public}: not found; expected the {TITLE} layout "
                        f"{category}/test_public/good, {category}/test_public/bad and "
                        f"{category}/test_public/ground_truth/bad/<name>_mask.png")
    images = [TestImage(path, 0) for path in image_files(public / "good")]
    truth = [public / "ground_truth" / "bad"]
    for path in image_files(public / "bad"):
        mask = find_mask(path, truth)
        if mask is None:
            raise UserError(f"{path}: defect image without a mask; looked for "
                            f"{mask_names_tried(path, truth)}")
        images.append(TestImage(path, 1, "bad", mask))
    return [TestSet(name=category, description=f"{TITLE} {category} test_public in {root}",
                    images=images, has_masks=True).check()]


MVTEC_AD2 = category_dataset(
    "mvtec-ad2", TITLE,
    "MVTec AD 2: training images ROOT/OBJECT/train/good/, tested on test_public/.",
    CATEGORIES,
    lambda root, category: layout_source("mvtec-ad2", TITLE, root, category, GENERIC_PRESET),
    test_public,
    default_preset=lambda category: GENERIC_PRESET,
)
