"""The save of one process: the tree's pieces staged on the host (the part
``save()`` waits for), then written into packed files by writer threads in
the background.

Staging is bounded: arrays on the CPU backend are pinned as zero-copy
views (while a numpy view of a buffer exists, XLA will not donate it, so
the bytes cannot change under the writer); device arrays on accelerators
and numpy leaves are copied to host memory, at most ``max_host_bytes`` at
once, waiting for the writers to free room.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from s3dlio import _native
from s3dlio_jax import _layout
from s3dlio_jax._layout import Box


@dataclasses.dataclass
class Piece:
    """Rows `box` of leaf `leaf`, with the host bytes to store."""

    leaf: int
    box: Box
    data: np.ndarray
    # Bytes counted against the host budget (0 for pinned views).
    held: int
    label: str


class Budget:
    """Host bytes held by staged copies; `acquire` waits for room (one
    piece larger than the whole budget still goes through alone)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.failed = False
        self._cond = threading.Condition()

    def acquire(self, n: int) -> bool:
        with self._cond:
            while not self.failed and self.held and self.held + n > self.limit:
                self._cond.wait()
            if self.failed:
                return False
            self.held += n
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()

    def fail(self) -> None:
        with self._cond:
            self.failed = True
            self._cond.notify_all()


def leaf_kind(value: Any) -> str:
    if isinstance(value, jax.Array):
        return "jax"
    if isinstance(value, (np.ndarray, np.generic)):
        return "numpy"
    if isinstance(value, (bool, int, float)):
        return "scalar"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def row_chunks(shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """Row ranges splitting an array of `shape` into pieces of at most
    `chunk_bytes` (a single row may be larger)."""
    if not shape:
        return [(0, 1)]
    rows = shape[0]
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, chunk_bytes // max(1, row_bytes))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)] or [(0, 0)]


def normalize(index: tuple[slice, ...], shape: tuple[int, ...]) -> Box:
    return [list(s.indices(n)[:2]) for s, n in zip(index, shape, strict=True)]


def stage(
    leaves: list[tuple[str, Any]],
    put: Callable[[Piece], None],
    budget: Budget,
    chunk_bytes: int,
    primary: bool,
) -> None:
    """Hand every piece this process stores to `put`, in tree order."""
    for n, (label, value) in enumerate(leaves):
        if isinstance(value, jax.Array):
            _stage_jax(n, label, value, put, budget, chunk_bytes)
        elif isinstance(value, (np.ndarray, np.generic)) and primary:
            arr = np.asarray(value)
            for r0, r1 in row_chunks(arr.shape, arr.dtype.itemsize, chunk_bytes):
                part = arr[r0:r1] if arr.ndim else arr
                if not budget.acquire(part.nbytes):
                    return
                box = [[r0, r1], *([0, d] for d in arr.shape[1:])] if arr.ndim else []
                put(Piece(n, box, np.ascontiguousarray(part).copy(), part.nbytes, label))


def _stage_jax(
    n: int,
    label: str,
    value: jax.Array,
    put: Callable[[Piece], None],
    budget: Budget,
    chunk_bytes: int,
) -> None:
    shape = value.shape
    itemsize = np.dtype(value.dtype).itemsize
    for shard in value.addressable_shards:
        if shard.replica_id != 0:
            continue
        box = normalize(shard.index, shape)
        local = tuple(b - a for a, b in box)
        pinned = shard.device.platform == "cpu"
        view = np.asarray(shard.data) if pinned else None
        if view is not None and not view.flags.c_contiguous:
            view, pinned = None, False
        for r0, r1 in row_chunks(local, itemsize, chunk_bytes):
            sub = [[box[0][0] + r0, box[0][0] + r1], *box[1:]] if local else []
            if view is not None:
                data = view[r0:r1] if local else view
                put(Piece(n, sub, data, 0, label))
                continue
            nbytes = itemsize * _layout.volume([[r0, r1], *([0, d] for d in local[1:])])
            if not budget.acquire(nbytes):
                return
            data = np.asarray(shard.data[r0:r1] if local else shard.data)
            put(Piece(n, sub, np.ascontiguousarray(data), nbytes, label))


def group_width(dtype: np.dtype) -> int | None:
    return _native.byte_group_width(dtype)


class Writers:
    """Writer threads, each streaming pieces into its own packed files
    (a new file once one reaches `file_cap` bytes, so that objects stay
    single requests on object stores)."""

    def __init__(
        self,
        directory: str,
        process: int,
        threads: int,
        level: int | None,
        byte_grouping: bool | None,
        budget: Budget,
        storage_options: dict[str, str] | None,
    ) -> None:
        self.directory = directory
        self.process = process
        self.threads = threads
        self.level = level
        self.byte_grouping = byte_grouping
        self.budget = budget
        self.storage_options = storage_options
        self.queue: queue.Queue[Piece | None] = queue.Queue()
        self.records: list[tuple[int, dict[str, Any]]] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._files = 0
        limit = _native.single_put_limit(directory, None, storage_options)
        self.file_cap = None if limit is None else max(1, limit - 1)

    def put(self, piece: Piece) -> None:
        self.queue.put(piece)

    def close_input(self) -> None:
        for _ in range(self.threads):
            self.queue.put(None)

    def _next_name(self) -> str:
        with self._lock:
            n = self._files
            self._files += 1
        return _layout.data_name(self.process, n)

    def run(self) -> None:
        """Write everything queued until `close_input`; raise the first
        failure."""
        workers = [
            threading.Thread(target=self._work, name=f"s3dlio-jax-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if self.error is not None:
            raise self.error

    def _open(self) -> tuple[str, Any]:
        name = self._next_name()
        cpus = os.cpu_count() or 1
        writer = _native.PackWriter(
            _layout.child(self.directory, name),
            compression_level=self.level,
            zstd_workers=max(1, cpus // self.threads) if self.level is not None else 0,
            storage_options=self.storage_options,
        )
        return name, writer

    def _work(self) -> None:
        name, writer, written = None, None, 0
        try:
            while True:
                piece = self.queue.get()
                if piece is None:
                    break
                try:
                    if self.error is not None:
                        continue
                    size = piece.data.nbytes
                    if (
                        writer is not None
                        and self.file_cap is not None
                        and written
                        and written + size > self.file_cap
                    ):
                        writer.close()
                        writer = None
                    if writer is None:
                        name, writer = self._open()
                        written = 0
                    group = None
                    if self.level is not None and self.byte_grouping is not False and size:
                        width = group_width(piece.data.dtype)
                        group = (0, width) if width else None
                    flat = piece.data.reshape(-1).view(np.uint8)
                    placed = writer.write_item([flat], group)
                    written += placed.length
                    grouping = placed.grouping
                    encoding: Any = list(grouping) if grouping else self.level is not None
                    record = {
                        "box": piece.box,
                        "file": name,
                        "offset": placed.offset,
                        "length": placed.length,
                        "size": placed.size,
                        "crc32c": placed.crc32c,
                        "encoding": encoding,
                    }
                    if encoding is False and placed.size > _layout.CRC_BLOCK:
                        # A restore under another sharding reads parts of
                        # this piece: whole blocks, each checked.
                        record["block"] = _layout.CRC_BLOCK
                        record["block_crc32c"] = _native.block_crc32c(flat, _layout.CRC_BLOCK)
                    elif grouping and len(placed.frames) > 1:
                        # Byte-grouped frames decode alone: they are this
                        # piece's blocks, located by their stored lengths.
                        record["block"] = grouping[3]
                        record["block_crc32c"] = [crc for _, crc in placed.frames]
                        record["block_stored"] = [n for n, _ in placed.frames]
                    with self._lock:
                        self.records.append((piece.leaf, record))
                finally:
                    self.budget.release(piece.held)
            if writer is not None:
                writer.close()
                writer = None
        except BaseException as e:  # noqa: BLE001 - re-raised by run()
            with self._lock:
                if self.error is None:
                    self.error = e
            self.budget.fail()
            if writer is not None:
                writer.abort()
            # Keep draining so that staging and the other writers finish.
            while True:
                piece = self.queue.get()
                if piece is None:
                    break
                self.budget.release(piece.held)
