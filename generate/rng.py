"""Random streams per example, so that an example depends only on (seed, index).

Each example gets its own :class:`numpy.random.Generator` seeded by
``SeedSequence([seed, index])``: examples can be made in any order, by any worker, and a
resumed run reproduces the bytes of an interrupted one. Pairing by passes over the images
(``pairing = "previous"``) draws each pass's order from its own stream, :func:`epoch_rng`.
No global RNG state is used.
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


#: The spawn key of the per-epoch pairing stream (``pairing = "previous"``). With it the
#: seed sequence's entropy is ``[seed, epoch, 0, 0, 1]`` (padded to numpy's pool of four
#: words, then the key), which no :func:`example_rng` entropy ``[seed, index]`` equals
#: for seeds and indices below 2**64, so the two streams cannot coincide.
PAIRING_STREAM = 1


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of pass ``epoch`` over the images of a run seeded with ``seed`` (both
    >= 0): ``SeedSequence([seed, epoch], spawn_key=(PAIRING_STREAM,))``."""
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise UserError(f"{name} must be a non-negative integer, not {value!r}")
    sequence = np.random.SeedSequence([int(seed), int(epoch)], spawn_key=(PAIRING_STREAM,))
    return np.random.Generator(np.random.PCG64(sequence))
