"""A dict of numpy arrays as a few pack objects plus an index: the path a
JAX or TensorFlow adapter would take through s3dlio's public pack API
(`s3dlio._native.PackWriter` / `read_items`, as s3dlio_torch uses them).

Saving splits the arrays into `groups` sets of about equal bytes and
writes each set into its own pack object from its own thread, with one
`write_items` call (GIL released once; on file:// uncompressed it is a
vectored write straight from the arrays' memory, CRC32C per item), or one
`write_item` per array when compressing (floats byte-grouped). A small
JSON index naming every array's pack, byte range, CRC32C, dtype and shape
is written last. Restoring reads the index, allocates one 64-byte aligned
array per entry and fills them all with one `read_items` call (ranged
reads in parallel, straight into the arrays, every CRC32C checked).
Aligned arrays matter: JAX's `device_put` and TensorFlow's DLPack import
adopt 64-byte aligned host memory without a copy.

A bench helper, not library API: saving again to the same root writes the
same pack names, so a failed save there can damage the previous one (a
library version would name packs per save, as s3dlio_torch does).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from s3dlio import _native

INDEX = "index.json"
# JAX's and TensorFlow's CPU allocators align to 64 bytes and adopt host
# buffers aligned like that without copying them.
ALIGN = 64
# Float widths the pack writer's byte-grouping filter takes.
GROUP_WIDTHS = (2, 4, 8)


def _child(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def _bytes_of(array: np.ndarray) -> np.ndarray:
    """The array's memory as a flat uint8 view (no copy)."""
    if not array.flags.c_contiguous:
        raise ValueError("pack items must be C-contiguous arrays")
    return array.reshape(-1).view(np.uint8)


def _groups(arrays: Mapping[str, np.ndarray], count: int) -> list[list[str]]:
    """Names split into at most `count` lists of about equal bytes (each
    largest array goes to the lightest list), in their original order."""
    order = {name: i for i, name in enumerate(arrays)}
    lists: list[list[str]] = [[] for _ in range(max(1, min(count, len(arrays))))]
    loads = [0] * len(lists)
    for name in sorted(arrays, key=lambda n: -arrays[n].nbytes):
        i = loads.index(min(loads))
        lists[i].append(name)
        loads[i] += arrays[name].nbytes
    return [sorted(names, key=order.__getitem__) for names in lists if names]


def _write_pack(
    uri: str, arrays: Mapping[str, np.ndarray], names: list[str], level: int | None
) -> list[tuple[int, int, int, int | None, Any]]:
    with _native.PackWriter(uri, compression_level=level) as writer:
        if level is None:
            return writer.write_items([[_bytes_of(arrays[n])] for n in names])
        placed = []
        for n in names:
            a = arrays[n]
            width = a.dtype.itemsize
            floats = a.dtype.kind == "f" and width in GROUP_WIDTHS and a.size > 0
            placed.append(writer.write_item([_bytes_of(a)], (0, width) if floats else None))
        return placed


def save_arrays(
    root: str,
    arrays: Mapping[str, np.ndarray],
    pool: ThreadPoolExecutor,
    groups: int,
    level: int | None = None,
) -> None:
    """Store `arrays` under `root`: `groups` pack objects written in
    parallel on `pool`, then the index."""
    sets = _groups(arrays, groups)
    futures = [
        pool.submit(_write_pack, _child(root, f"pack-{i:03d}"), arrays, names, level)
        for i, names in enumerate(sets)
    ]
    index: dict[str, Any] = {}
    for i, (names, future) in enumerate(zip(sets, futures, strict=True)):
        for name, (offset, length, _size, crc, grouping) in zip(
            names, future.result(), strict=True
        ):
            a = arrays[name]
            encoding: Any = list(grouping) if grouping is not None else level is not None
            index[name] = {
                "pack": f"pack-{i:03d}",
                "offset": offset,
                "length": length,
                "encoding": encoding,
                "crc32c": crc,
                "dtype": a.dtype.str,
                "shape": list(a.shape),
            }
    in_order = {name: index[name] for name in arrays}
    _native.put_object(_child(root, INDEX), json.dumps(in_order).encode())


def aligned_empty(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised C-contiguous array whose data is ALIGN-aligned."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def load_arrays(root: str, threads: int, batch_bytes: int) -> Iterator[dict[str, np.ndarray]]:
    """The arrays `save_arrays` stored under `root`, each in its own
    aligned buffer, about `batch_bytes` at a time (one `read_items` call
    per batch, `threads` ranged reads in flight): a caller that hands each
    batch over before taking the next holds only one batch of new memory
    beside the old values."""
    index = json.loads(_native.get_bytes(_child(root, INDEX)))
    batch: dict[str, np.ndarray] = {}
    reads: list[tuple[Any, ...]] = []
    held = 0
    for name, e in index.items():
        a = aligned_empty(np.dtype(e["dtype"]), tuple(e["shape"]))
        batch[name] = a
        if a.nbytes:
            encoding = e["encoding"]
            encoding = tuple(encoding) if isinstance(encoding, list) else encoding
            reads.append(
                (e["pack"], e["offset"], e["length"], encoding, e["crc32c"], name, [_bytes_of(a)])
            )
            held += a.nbytes
        if held >= batch_bytes:
            _native.read_items(root, reads, thread_count=threads)
            yield batch
            batch, reads, held = {}, [], 0
    if batch:
        _native.read_items(root, reads, thread_count=threads)
        yield batch
