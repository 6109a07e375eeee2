"""NIH ChestX-ray14: images under a root named one per line in list files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from nsa.datasets.base import (
    Dataset,
    SourceTable,
    Table,
    absolute,
    need_path,
    need_root,
    option,
    root_option,
)
from nsa.evaluate.testsets import TestSet, chestxray_testset
from nsa.generate.sources import Source, chestxray_source
from pydantic import Field


class ChestxrayLists(Table):
    train: str
    normal_test: str
    anomaly_test: str


class ChestxraySource(SourceTable):
    """``[source]``: ``root``, ``lists_dir`` and one ``lists.<name>`` table per category."""

    kind: Literal["chestxray"]
    root: str
    lists_dir: str = "."
    lists: dict[str, ChestxrayLists] = Field(min_length=1)

    def category_names(self) -> list[str]:
        return list(self.lists)

    def _list(self, category: str, which: str) -> Path:
        return Path(self.lists_dir) / getattr(self.lists[category], which)

    def training_source(self, category: str) -> Source:
        return chestxray_source(self.root, self._list(category, "train"))

    def test_sets(self, category: str) -> list[TestSet]:
        return [chestxray_testset(self.root, self._list(category, "normal_test"),
                                  self._list(category, "anomaly_test"))]

    def source_identity(self, category: str) -> dict[str, Any]:
        return {"kind": "chestxray", "root": absolute(self.root),
                "list": absolute(self._list(category, "train"))}

    def testset_identity(self, category: str) -> dict[str, Any]:
        return {"kind": "chestxray", "root": absolute(self.root),
                "normal": absolute(self._list(category, "normal_test")),
                "anomaly": absolute(self._list(category, "anomaly_test"))}

    def check_inputs(self) -> None:
        need_path("root", Path(self.root))
        for name, lists in self.lists.items():
            for key, file in lists.model_dump().items():
                need_path(f"lists.{name}.{key}", Path(self.lists_dir) / file, folder=False)


def _list_option(name: str, flag: str, help_text: str) -> Any:
    return option(name, Annotated[Path, typer.Option(flag, help=help_text)])


CHESTXRAY = Dataset(
    name="chestxray", title="ChestX-ray14",
    summary="NIH ChestX-ray14: the images under ROOT named one per line in the list files.",
    categories=(), table=ChestxraySource,
    gen_options=(root_option("Folder holding the NIH ChestX-ray14 images."),
                 _list_option("list_file", "--list", "File naming one image per line.")),
    eval_options=(
        root_option("Folder holding the NIH ChestX-ray14 images."),
        _list_option("normal_list", "--normal-list", "File naming the normal test images."),
        _list_option("anomaly_list", "--anomaly-list", "File naming the anomalous test images."),
        option("name", Annotated[str | None, typer.Option(
            "--name", help="Row name (default: from the list names).")], None),
    ),
    source=lambda root, list_file: chestxray_source(
        need_root(root, "ChestX-ray14 image folder"), list_file),
    testsets=lambda root, normal_list, anomaly_list, name: [chestxray_testset(
        need_root(root, "ChestX-ray14 image folder"), normal_list, anomaly_list, name)],
    out_name=lambda root, list_file: f"chestxray-{Path(list_file).stem}",
    default_preset=lambda category: "chestxray",
)
