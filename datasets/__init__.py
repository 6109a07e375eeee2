"""The dataset registry: every layout nsa-pipeline reads, one :class:`Dataset` each.

``nsa-gen`` and ``nsa-eval`` make one subcommand per entry, and a pipeline config's
``[source] kind`` names one; adding a layout is one module here with its ``Dataset`` and a
line in :data:`DATASETS` (see docs/datasets.md).
"""

from __future__ import annotations

from nsa.datasets.base import Dataset, SourceTable
from nsa.datasets.chestxray import CHESTXRAY
from nsa.datasets.elpv import ELPV
from nsa.datasets.folder import FOLDER
from nsa.datasets.mvtec import BTAD, MPDD, MVTEC
from nsa.datasets.mvtec_ad2 import MVTEC_AD2
from nsa.datasets.mvtec_loco import MVTEC_LOCO
from nsa.datasets.visa import VISA

from nsa.errors import UserError

#: name -> layout, in the order of the CLIs' help.
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    MVTEC, CHESTXRAY, FOLDER, ELPV, VISA, MVTEC_AD2, MVTEC_LOCO, BTAD, MPDD)}

__all__ = ["DATASETS", "Dataset", "SourceTable", "dataset"]


def dataset(name: str) -> Dataset:
    """The layout called ``name``; UserError listing the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; choose one of "
                        f"{', '.join(DATASETS)}") from None
