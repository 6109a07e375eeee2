"""The shard index cache: each shard's index is fetched once, the data as before."""

from __future__ import annotations

import numpy as np
import zarr
from zarr.abc.store import SuffixByteRequest
from zarr.storage import LocalStore, WrapperStore

from nsa.shard_index import ShardIndexCache


class Recorded(WrapperStore):
    """A store that records the (key, byte range) of every read it passes on."""

    def __init__(self, store):
        super().__init__(store)
        self.reads: list[tuple[str, object]] = []

    async def get(self, key, prototype, byte_range=None):
        self.reads.append((key, byte_range))
        return await self._store.get(key, prototype, byte_range)


def test_each_shard_index_is_read_once_and_the_chunks_are_unchanged(tmp_path):
    data = np.arange(64 * 6, dtype=np.uint16).reshape(64, 6)
    written = zarr.create_array(LocalStore(tmp_path / "a.zarr"), shape=data.shape,
                                dtype=data.dtype, chunks=(4, 6), shards=(16, 6))
    written[:] = data
    inner = Recorded(LocalStore(tmp_path / "a.zarr", read_only=True))
    array = zarr.open_array(ShardIndexCache(inner), mode="r")
    for _ in range(2):  # two epochs, chunk by chunk in a shuffled order
        for chunk in np.random.default_rng(0).permutation(16):
            rows = slice(4 * chunk, 4 * chunk + 4)
            assert (array[rows] == data[rows]).all()
    suffixes = [key for key, byte_range in inner.reads
                if isinstance(byte_range, SuffixByteRequest)]
    assert sorted(suffixes) == [f"c/{shard}/0" for shard in range(4)]
    chunk_reads = [key for key, byte_range in inner.reads
                   if key.startswith("c/") and not isinstance(byte_range, SuffixByteRequest)]
    assert len(chunk_reads) == 2 * 16  # every chunk read still reaches the store
