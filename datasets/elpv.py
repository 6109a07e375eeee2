"""ELPV solar cells of the ``elpv-dataset`` package, by the one split rule of
:func:`nsa.generate.sources.elpv_split` (nothing to download, no root)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from nsa.datasets.base import Dataset, SourceTable, option
from nsa.evaluate.testsets import TestSet, elpv_testset
from nsa.generate.sources import Source, elpv_data_dir, elpv_source
from pydantic import AliasChoices, Field

from nsa.errors import UserError


class ElpvSource(SourceTable):
    """``[source]``: ``type`` (one category, mono or poly; the old key ``cell_type`` is
    still read), as ``nsa-gen elpv --type``."""

    kind: Literal["elpv"]
    type: Literal["mono", "poly"] = Field(
        "mono", validation_alias=AliasChoices("type", "cell_type"))

    def category_names(self) -> list[str]:
        return [self.type]

    def training_source(self, category: str) -> Source:
        return elpv_source(category, "train")

    def test_sets(self, category: str) -> list[TestSet]:
        return [elpv_testset(category)]

    def source_identity(self, category: str) -> dict[str, Any]:
        return {"kind": "elpv", "cell_type": category}

    def testset_identity(self, category: str) -> dict[str, Any]:
        return self.source_identity(category)

    def check_inputs(self) -> None:
        try:
            elpv_data_dir()
        except UserError as exc:
            raise UserError(f"[source] kind: {exc}") from None

    def before_evaluate(self, run: Path, category: str, progress: bool) -> None:
        """Calibrate on half of the held-out good cells (tested on the other half)."""
        from nsa.evaluate.calibrate import calibrate_held_out_elpv

        calibrate_held_out_elpv(run, category, progress)


_TYPE = option("cell_type", Annotated[str, typer.Option(
    "--type", help="ELPV cell type: mono or poly.")])

ELPV = Dataset(
    name="elpv", title="ELPV",
    summary="ELPV solar cells (elpv-dataset package) of one type: trains on its training "
    "split, tests held-out functional cells against defective ones (image level).",
    categories=("mono", "poly"), table=ElpvSource,
    gen_options=(_TYPE,), eval_options=(_TYPE,),
    source=lambda cell_type: elpv_source(cell_type),
    testsets=lambda cell_type: [elpv_testset(cell_type)],
    out_name=lambda cell_type: f"elpv-{cell_type}",
    default_preset=lambda category: "elpv",
)
