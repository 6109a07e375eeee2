"""The bytes of a whole shard file, encoded without zarr's per-chunk copies.

``nsa-gen`` writes every shard whole, in one task. zarr 3.1 writes a whole shard by
copying each inner chunk into a new buffer filled with the fill value, compressing it, and
joining the compressed chunks into one more buffer: measured at 256 px on ELPV, writing a
1,024-example image shard through zarr cost 0.23 to 0.41 CPU ms per example, of which
Blosc's compression is 0.13. This module makes the same bytes directly: each inner chunk
of the given rows compressed in place with the array's own Blosc settings, the compressed
chunks one after another, then the shard index, one ``(offset, length)`` pair of
little-endian uint64 per inner chunk, followed by the CRC-32C of the index. That is the
layout of the Zarr v3 ``sharding_indexed`` codec with its index at the end
(https://zarr-specs.readthedocs.io/en/latest/v3/codecs/sharding-indexed/) and the codec
chains a store's arrays are created with; the tests compare the bytes with zarr's own.

Only those layouts are encoded here (:func:`shard_encoder` answers None for any other,
and the caller lets zarr write), and only whole shards: the last shard of a store whose
size is not a multiple of the shard is written by zarr, which pads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import google_crc32c
import numcodecs
import numpy as np
import zarr
from numcodecs.blosc import MAX_OVERHEAD as BLOSC_MAX_OVERHEAD
from zarr.codecs import BloscCodec, BloscShuffle, BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

_SHUFFLES = {BloscShuffle.noshuffle: numcodecs.Blosc.NOSHUFFLE,
             BloscShuffle.shuffle: numcodecs.Blosc.SHUFFLE,
             BloscShuffle.bitshuffle: numcodecs.Blosc.BITSHUFFLE}


@dataclass(frozen=True)
class ShardEncoder:
    """Encodes whole shards of one sharded, Blosc-compressed array (see the module)."""

    shard_shape: tuple[int, ...]
    chunk_rows: int  # rows of an inner chunk; inner chunks split the first axis only
    dtype: np.dtype
    compressor: numcodecs.Blosc

    @property
    def max_bytes(self) -> int:
        """The largest shard file this encoder can make: every inner chunk uncompressed
        plus Blosc's 16-byte header, then the index and its CRC-32C."""
        chunks = -(-self.shard_shape[0] // self.chunk_rows)
        nbytes = int(np.prod(self.shard_shape)) * self.dtype.itemsize
        return nbytes + chunks * (BLOSC_MAX_OVERHEAD + 16) + 4

    def encode(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The shard file holding ``values``, of the array's dtype and exactly the shard's
        shape, as a 1-D uint8 array: the first bytes of ``out`` (a 1-D uint8 array of at
        least :attr:`max_bytes`, overwritten) when given, else a new array.

        Each inner chunk is copied into the file as soon as it is compressed, so a
        writer that passes the same ``out`` shard after shard makes no new file each
        time: writing a 256 px ELPV shard took 23 page faults per example with a new
        43 MB file, 11 with ``out`` (those of Blosc's own buffer for each chunk). Raises
        ValueError for any other shape or dtype, or an ``out`` too small."""
        if values.shape != self.shard_shape or values.dtype != self.dtype:
            raise ValueError(f"a shard is {self.shard_shape} {self.dtype}, "
                             f"not {values.shape} {values.dtype}")
        if out is None:
            out = np.empty(self.max_bytes, np.uint8)
        elif out.dtype != np.uint8 or out.ndim != 1 or len(out) < self.max_bytes:
            raise ValueError(f"a shard file needs {self.max_bytes} bytes of uint8, "
                             f"not {out.shape} {out.dtype}")
        values = np.ascontiguousarray(values, dtype=self.dtype.newbyteorder("<"))
        index = np.empty((-(-len(values) // self.chunk_rows), 2), "<u8")
        end = 0
        for chunk, start in enumerate(range(0, len(values), self.chunk_rows)):
            part = self.compressor.encode(values[start:start + self.chunk_rows])
            out[end:end + len(part)] = np.frombuffer(part, np.uint8)
            index[chunk] = end, len(part)
            end += len(part)
        index_bytes = index.tobytes()
        crc = np.array([google_crc32c.value(index_bytes)], dtype="<u4").tobytes()
        for tail in (index_bytes, crc):
            out[end:end + len(tail)] = np.frombuffer(tail, np.uint8)
            end += len(tail)
        return out[:end]


def shard_encoder(array: zarr.Array) -> ShardEncoder | None:
    """The encoder of ``array``'s shards, or None when its layout is not the one encoded
    here: sharding of inner chunks that split only the first axis, the codecs
    ``bytes`` (little-endian or one byte) then ``blosc``, and an index of ``bytes`` then
    ``crc32c`` at the end."""
    metadata = array.metadata
    if metadata.zarr_format != 3 or len(metadata.codecs) != 1:
        return None
    sharding = metadata.codecs[0]
    if not isinstance(sharding, ShardingCodec):
        return None
    shard_shape = tuple(metadata.chunk_grid.chunk_shape)  # type: ignore[attr-defined]
    inner = tuple(sharding.chunk_shape)
    dtype = np.dtype(array.dtype)
    if (inner[1:] != shard_shape[1:] or shard_shape[0] % inner[0]
            or sharding.index_location != ShardingCodecIndexLocation.end
            or not _is_codecs(sharding.index_codecs, (BytesCodec, Crc32cCodec))
            or not _is_codecs(sharding.codecs, (BytesCodec, BloscCodec))):
        return None
    order, blosc = sharding.codecs
    assert isinstance(order, BytesCodec) and isinstance(blosc, BloscCodec)
    if dtype.itemsize > 1 and (order.endian is None or order.endian.value != "little"):
        return None
    compressor = numcodecs.Blosc(cname=blosc.cname.value, clevel=blosc.clevel,
                                 shuffle=_SHUFFLES[blosc.shuffle], blocksize=blosc.blocksize,
                                 typesize=blosc.typesize)
    return ShardEncoder(shard_shape, inner[0], dtype, compressor)


def _is_codecs(codecs: tuple[object, ...], kinds: tuple[type, ...]) -> bool:
    return len(codecs) == len(kinds) and all(
        isinstance(codec, kind) for codec, kind in zip(codecs, kinds, strict=True))
