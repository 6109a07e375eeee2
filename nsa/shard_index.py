"""A read-only zarr store wrapper that fetches each shard's index once.

Zarr reads a chunk of a sharded array as two requests: the shard's index (a suffix read
of 16 bytes per chunk + 4 at the end of the shard's object), then the chunk's byte range.
It does not keep the index, so every chunk read asks for it again: on an object store, 7
of the 14 requests per chunk of an NSA store. The index of a written shard never changes
(a shard is written whole, and a resumed store rewrites it with the same bytes), so a
reader can keep it: 16 bytes per chunk, per shard and array.

Zarr's own ``zarr.experimental.cache_store.CacheStore`` keeps every read, the chunks'
bytes included, under one LRU budget: the data would push the indexes out, or, without a
budget, hold the whole store in memory.
"""

from __future__ import annotations

from zarr.abc.store import ByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore


class ShardIndexCache(WrapperStore[Store]):
    """``store`` (opened read-only) keeping the result of every suffix read it answers;
    every other read goes to ``store`` unchanged."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._suffixes: dict[tuple[str, int], Buffer] = {}

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        if not isinstance(byte_range, SuffixByteRequest):
            return await self._store.get(key, prototype, byte_range)
        found = self._suffixes.get((key, byte_range.suffix))
        if found is None:
            found = await self._store.get(key, prototype, byte_range)
            if found is not None:  # a shard not written yet may be written later
                self._suffixes[key, byte_range.suffix] = found
        return found
