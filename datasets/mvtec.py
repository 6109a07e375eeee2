"""MVTec AD and the datasets released in its layout: BTAD and MPDD.

``<root>/<category>/train/good/``, ``test/good/``, ``test/<defect>/`` and
``ground_truth/<defect>/<name>_mask.png`` (or ``<name>.<ext>``: BTAD names masks like their
images, some ``.bmp``). BTAD calls its folders ``ok`` and ``ko``; both ``good`` and ``ok``
are taken as the good folder.
"""

from __future__ import annotations

from pathlib import Path

from nsa.datasets.base import GENERIC_PRESET, category_dataset
from nsa.evaluate.testsets import layout_testset, mvtec_testset
from nsa.generate.presets import PRESETS
from nsa.generate.sources import layout_source, mvtec_source

#: The MVTec AD categories: the presets of kind object or texture.
MVTEC_CATEGORIES = tuple(name for name, p in PRESETS.items() if p["kind"] in ("object", "texture"))
BTAD_CATEGORIES = ("01", "02", "03")
BTAD_GOOD = ("good", "ok")
MPDD_CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector",
                   "metal_plate", "tubes")

MVTEC = category_dataset(
    "mvtec", "MVTec AD",
    "MVTec AD: ROOT/CATEGORY/train/good/ to train on, test/good/ against test/<defect>/ "
    "with masks in ground_truth/<defect>/ (any image format, any case).",
    MVTEC_CATEGORIES, mvtec_source, lambda root, category: [mvtec_testset(root, category)],
    default_preset=lambda category: category if category in MVTEC_CATEGORIES else None,
)

BTAD = category_dataset(
    "btad", "BTAD",
    "BTAD (01, 02, 03): ROOT/CATEGORY/train/{good,ok}/, test/{good,ok}/ against the other "
    "test folders, masks in ground_truth/<defect>/.",
    BTAD_CATEGORIES,
    lambda root, category: layout_source(
        "btad", "BTAD", root, category, GENERIC_PRESET,
        train=tuple(f"train/{g}" for g in BTAD_GOOD)),
    lambda root, category: [layout_testset(root, category, "BTAD", good=BTAD_GOOD)],
    default_preset=lambda category: GENERIC_PRESET,
    train_folders=tuple(f"train/{g}" for g in BTAD_GOOD),
)

MPDD = category_dataset(
    "mpdd", "MPDD",
    "MPDD (metal parts), in the MVTec AD layout: ROOT/CATEGORY/train/good/, test/, "
    "ground_truth/.",
    MPDD_CATEGORIES,
    lambda root, category: layout_source("mpdd", "MPDD", root, category, GENERIC_PRESET),
    lambda root, category: [layout_testset(Path(root), category, "MPDD")],
    default_preset=lambda category: GENERIC_PRESET,
)
