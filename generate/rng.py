"""Random streams per example, so that an example depends only on (seed, index).

Each example gets its own :class:`numpy.random.Generator` seeded by
``SeedSequence([seed, index])``: examples can be made in any order, by any worker, and a
resumed run reproduces the bytes of an interrupted one. No global RNG state is used.
"""

from __future__ import annotations

import numpy as np

from nsa.errors import UserError


def example_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for example ``index`` of a run seeded with ``seed`` (both >= 0)."""
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise UserError(f"{name} must be a non-negative integer, not {value!r}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index)])))
