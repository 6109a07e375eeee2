"""MVTec LOCO AD: logical and structural anomalies, reported separately.

``<category>/train/good/``, ``test/good/``, ``test/logical_anomalies/``,
``test/structural_anomalies/``; the ground truth of ``test/<type>/<name>.png`` is the union
of every image file in ``ground_truth/<type>/<name>/`` (``000.png``, ``001.png``, ...: one
per defect). Each category gives three test sets, all with the same good images:
``<category>`` (every test image), ``<category>-logical`` and ``<category>-structural``.
"""

from __future__ import annotations

from pathlib import Path

from nsa.datasets.base import GENERIC_PRESET, category_dataset
from nsa.evaluate.testsets import GOOD, TestImage, TestSet
from nsa.generate.images import image_files, is_image_file
from nsa.generate.sources import layout_source

from nsa.errors import UserError

CATEGORIES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")
TYPES = {"logical": "logical_anomalies", "structural": "structural_anomalies"}
TITLE = "MVTec LOCO"


def _defects(base: Path, folder: str) -> list[TestImage]:
    images = []
    for path in image_files(base / "test" / folder):
        truth = base / "ground_truth" / folder / path.stem
        masks = sorted(p for p in truth.iterdir() if is_image_file(p) and p.is_file()
                       ) if truth.is_dir() else []
        if not masks:
            raise UserError(f"{path}: defect image without a mask; looked for image files in "
                            f"{truth}")
        images.append(TestImage(path, 1, folder, masks[0], tuple(masks[1:])))
    return images


def loco_testsets(root: Path, category: str) -> list[TestSet]:
    """The category's three test sets (all, logical, structural); UserError naming the
    missing test folder or a defect image without masks."""
    base = Path(root) / category
    test = base / "test"
    if not test.is_dir():
        raise UserError(f"{test}: not found; expected the {TITLE} layout {category}/test/good, "
                        f"{category}/test/{{{','.join(TYPES.values())}}}/ and "
                        f"{category}/ground_truth/<type>/<name>/000.png")
    good = [TestImage(path, 0) for path in image_files(test / GOOD)]
    by_type = {kind: _defects(base, folder) for kind, folder in TYPES.items()}
    where = f"{TITLE} {category} test split in {root}"
    sets = [TestSet(category, where, good + by_type["logical"] + by_type["structural"], True)]
    sets += [TestSet(f"{category}-{kind}", f"{where}, {kind} anomalies", good + images, True)
             for kind, images in by_type.items()]
    return [testset.check() for testset in sets]


MVTEC_LOCO = category_dataset(
    "mvtec-loco", TITLE,
    "MVTec LOCO AD: training images ROOT/CATEGORY/train/good/; logical and structural "
    "anomalies evaluated separately.",
    CATEGORIES,
    lambda root, category: layout_source("mvtec-loco", TITLE, root, category, GENERIC_PRESET),
    loco_testsets,
    default_preset=lambda category: GENERIC_PRESET,
)
