"""Per-example random streams: a pure function of (seed, index)."""

import numpy as np
import pytest
from nsa.generate.rng import example_rng

from nsa.errors import UserError


def test_same_seed_and_index_give_the_same_stream():
    assert np.array_equal(example_rng(3, 7).random(5), example_rng(3, 7).random(5))


def test_different_indices_or_seeds_give_different_streams():
    base = example_rng(3, 7).random(5)
    assert not np.array_equal(base, example_rng(3, 8).random(5))
    assert not np.array_equal(base, example_rng(4, 7).random(5))


@pytest.mark.parametrize("seed,index", [(-1, 0), (0, -2), (1.5, 0), (True, 0)])
def test_bad_seed_or_index_is_a_user_error(seed, index):
    with pytest.raises(UserError, match="non-negative integer"):
        example_rng(seed, index)
