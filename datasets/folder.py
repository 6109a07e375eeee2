"""Your own images: folders of normal images for training; good and defect folders, with
an optional mask folder, for testing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from nsa.datasets.base import (
    Dataset,
    SourceTable,
    absolute,
    need_path,
    need_root,
    option,
    root_option,
)
from nsa.evaluate.testsets import TestSet, folder_testset
from nsa.generate.sources import Source, folder_source
from pydantic import Field


class FolderSource(SourceTable):
    """``[source]``: training ``root`` (one folder or a list), the row ``name`` (default:
    the first root's folder name), ``test_good`` (one or a list), ``test_defects``,
    optional ``test_masks`` and ``mask_pattern``."""

    kind: Literal["folder"]
    root: str | list[str]
    name: str | None = None
    test_good: str | list[str]
    test_defects: list[str] = Field(min_length=1)
    test_masks: str | None = None
    mask_pattern: str | None = None

    def _roots(self) -> list[str]:
        return [self.root] if isinstance(self.root, str) else list(self.root)

    def _goods(self) -> list[str]:
        return [self.test_good] if isinstance(self.test_good, str) else list(self.test_good)

    def category_names(self) -> list[str]:
        roots = self._roots()
        return [self.name or (Path(roots[0]).name if roots else "")]

    def training_source(self, category: str) -> Source:
        return folder_source(self._roots())

    def test_sets(self, category: str) -> list[TestSet]:
        return [folder_testset(self._goods(), self.test_defects, self.test_masks,
                               name=category, mask_pattern=self.mask_pattern)]

    def source_identity(self, category: str) -> dict[str, Any]:
        roots = [absolute(r) for r in self._roots()]
        return {"kind": "folder", "root": roots[0] if isinstance(self.root, str) else roots}

    def testset_identity(self, category: str) -> dict[str, Any]:
        goods = [absolute(g) for g in self._goods()]
        identity = {
            "kind": "folder", "name": category,
            "good": goods[0] if isinstance(self.test_good, str) else goods,
            "defects": [absolute(d) for d in self.test_defects],
            "masks": None if self.test_masks is None else absolute(self.test_masks),
        }
        if self.mask_pattern is not None:
            identity["mask_pattern"] = self.mask_pattern
        return identity

    def check_inputs(self) -> None:
        for index, root in enumerate(self._roots()):
            need_path("root" if isinstance(self.root, str) else f"root[{index}]", Path(root))
        for index, good in enumerate(self._goods()):
            key = "test_good" if isinstance(self.test_good, str) else f"test_good[{index}]"
            need_path(key, Path(good))
        for index, folder in enumerate(self.test_defects):
            need_path(f"test_defects[{index}]", Path(folder))
        if self.test_masks is not None:
            need_path("test_masks", Path(self.test_masks))


def _testsets(good: list[Path], defect: list[Path], masks: Path | None, mask_pattern: str | None,
              name: str | None) -> list[TestSet]:
    return [folder_testset(good, defect, masks, name, mask_pattern)]


FOLDER = Dataset(
    name="folder", title="folder",
    summary="Your own images: folders of normal images to train on (recursive; needs "
    "--preset), good and defect folders to test on (masks optional).",
    categories=(), table=FolderSource,
    gen_options=(root_option("Folder of normal images; repeat for several.", multiple=True),),
    eval_options=(
        option("good", Annotated[list[Path], typer.Option(
            "--good", help="Folder of defect-free test images; repeatable.")]),
        option("defect", Annotated[list[Path], typer.Option(
            "--defect", help="Folder of defective images; repeatable.")]),
        option("masks", Annotated[Path | None, typer.Option(
            "--masks", help="Masks <stem>_mask.<ext> or <stem>.<ext> (any image format, any "
            "case; non-zero = defect), in MASKS/<defect folder>/ or MASKS/ (without: pixel "
            "metrics are null).")], None),
        option("mask_pattern", Annotated[str | None, typer.Option(
            "--mask-pattern", help="Mask file name with {stem} for the image's stem, e.g. "
            "{stem}_gt (any image suffix); default: {stem}_mask, then {stem}.")], None),
        option("name", Annotated[str | None, typer.Option(
            "--name", help="Row name (default: the good folder's parent).")], None),
    ),
    source=lambda root: folder_source(need_root(root, "folder of normal images")),
    testsets=_testsets,
    out_name=lambda root: Path(root[0]).resolve().name or "folder",
    default_preset=lambda category: None,
)
