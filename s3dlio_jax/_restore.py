"""Restore of a tree saved by `S3DlioCheckpointHandler`: each process reads
what its devices' slices hold of the stored pieces (whole pieces with
their CRC32C, or the blocks that cover the part needed, each checked:
CRC blocks of a piece stored as is, frames of a byte-grouped piece)
straight into the slices where the
layout allows, and builds arrays with ``jax.make_array_from_callback``."""

from __future__ import annotations

import contextlib
import gc
import mmap
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from s3dlio import _native
from s3dlio_jax import _layout
from s3dlio_jax._args import S3DlioRestore
from s3dlio_jax._layout import Box
from s3dlio_jax._path import S3DlioPath
from s3dlio_jax._save import normalize

# Host memory filled per batch of reads before the arrays are built.
BATCH_BYTES = 512 << 20


def read_index(directory: S3DlioPath) -> dict[str, Any]:
    uri = _layout.child(str(directory), _layout.INDEX)
    try:
        data = _native.get_object(uri, directory._storage_options)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{uri} does not exist: {directory} holds no checkpoint written by S3DlioSave "
            "(or its save did not finish)"
        ) from e
    return _layout.loads(data, uri)


def metadata(directory: S3DlioPath) -> Any:
    index = read_index(directory)
    pairs = []
    for leaf in index["leaves"]:
        if leaf["kind"] in ("jax", "numpy"):
            value: Any = jax.ShapeDtypeStruct(tuple(leaf["shape"]), jnp.dtype(leaf["dtype"]))
        else:
            value = leaf.get("value")
        pairs.append((leaf["path"], value))
    return _layout.nest(pairs)


class _Batch:
    """`read_items` items collected, issued at once (coalesced, in
    parallel), then what must happen once their bytes are in."""

    def __init__(self, directory: S3DlioPath, threads: int, results: list[Any]) -> None:
        self.directory = directory
        self.threads = threads
        self.results = results
        self.items: list[_native.ItemRead] = []
        self.after: list[Callable[[], None]] = []
        # (result slot, host array, sharding) of single-device arrays,
        # handed to jax in one device_put after the steps.
        self.puts: list[tuple[int, np.ndarray, Any]] = []
        self.held = 0

    def add(self, item: _native.ItemRead, held: int) -> None:
        self.items.append(item)
        self.held += held

    def then(self, step: Callable[[], None]) -> None:
        self.after.append(step)
        if self.held >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        items, after = self.items, self.after
        self.items, self.after, self.held = [], [], 0
        if items:
            _native.read_items(
                str(self.directory),
                items,
                thread_count=self.threads,
                storage_options=self.directory._storage_options,
            )
        for step in after:
            step()
        if self.puts:
            puts, self.puts = self.puts, []
            # One batched call: make_array_from_callback per leaf costs
            # about twice as much per array, which a tree of ~1000 small
            # leaves (biases, norms) notices.
            arrays = jax.device_put([a for _, a, _ in puts], [s for _, _, s in puts])
            for (n, _, _), arr in zip(puts, arrays, strict=True):
                self.results[n] = arr


# Buffers at least this large are their own anonymous mapping: page
# aligned, and populated by the kernel in one call (MAP_POPULATE). Faulting
# fresh pages in one at a time while the reads fill them was the largest
# cost of a restore on the dev VM (a first-touch fill runs at ~1 GB/s there,
# a copy into touched memory at ~17 GB/s; populating at mmap time ~2.3 GB/s).
MAPPED_BYTES = 2 << 20
_MAP_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
# XLA's CPU client adopts host memory aligned to this without a copy.
XLA_ALIGN = 64


def host_buffer(shape: tuple[int, ...] | list[int], dtype: Any) -> np.ndarray:
    """An uninitialised array that ``jax.make_array_from_callback`` /
    ``jax.device_put`` on the CPU backend adopts as the device buffer
    instead of copying it: numpy's own allocations are only 16-byte
    aligned, which costs a full copy of every restored array."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes >= MAPPED_BYTES:
        mapped = mmap.mmap(-1, nbytes, flags=_MAP_FLAGS)
        return np.frombuffer(mapped, dtype=dtype).reshape(shape)
    raw = np.empty(nbytes + XLA_ALIGN, dtype=np.uint8)
    skip = -raw.ctypes.data % XLA_ALIGN
    return raw[skip : skip + nbytes].view(dtype).reshape(shape)


def _bytes(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(np.uint8)


def _encoding(record: dict[str, Any]) -> Any:
    enc = record["encoding"]
    return tuple(enc) if isinstance(enc, list) else bool(enc)


def _whole(leaf: dict[str, Any], record: dict[str, Any], targets: list[Any]) -> _native.ItemRead:
    """The read of all of `record` into `targets`, its CRC32C checked."""
    return _native.ItemRead(
        record["file"],
        record["offset"],
        record["length"],
        _encoding(record),
        record["crc32c"],
        f"{leaf['key']} piece {record['box']}",
        targets,
    )


def _fill(batch: _Batch, leaf: dict[str, Any], dest: np.ndarray) -> None:
    """Queue the reads that fill `dest`, the whole of `leaf`."""
    for record in leaf["chunks"]:
        cbox = record["box"]
        if cbox and _layout.volume(cbox) == 0:
            continue
        if not cbox:
            batch.add(_whole(leaf, record, [_bytes(dest)]), 0)
            continue
        part = dest[tuple(slice(a, b) for a, b in cbox)]
        if part.flags.c_contiguous:
            batch.add(_whole(leaf, record, [_bytes(part)]), 0)
            continue
        _scatter_whole(batch, leaf, record, [(cbox, part)])


def _scatter_whole(
    batch: _Batch, leaf: dict[str, Any], record: dict[str, Any], pairs: list[tuple[Box, Any]]
) -> None:
    """Read `record` whole once (its CRC32C checked), then copy the part
    `inter` of it into each `(inter, dest)` of `pairs`."""
    cbox = record["box"]
    dtype = np.dtype(pairs[0][1].dtype)
    temp = np.empty([b - a for a, b in cbox], dtype=dtype)
    batch.add(_whole(leaf, record, [_bytes(temp)]), temp.nbytes)

    def scatter() -> None:
        for inter, dest in pairs:
            src = tuple(slice(a - c[0], b - c[0]) for (a, b), c in zip(inter, cbox, strict=True))
            dest[...] = temp[src]

    batch.then(scatter)


def _runs(cbox: Box, inter: Box, itemsize: int) -> tuple[np.ndarray, int]:
    """Where `inter` lies in the bytes of the piece `cbox` (stored
    row-major): the start of each contiguous run, in order, and the runs'
    common length."""
    ext = [b - a for a, b in cbox]
    stride = [itemsize] * len(ext)
    for j in range(len(ext) - 2, -1, -1):
        stride[j] = stride[j + 1] * ext[j + 1]
    # Trailing dimensions `inter` spans whole continue a run.
    k = len(ext) - 1
    while k > 0 and inter[k] == cbox[k]:
        k -= 1
    starts = np.array([(inter[k][0] - cbox[k][0]) * stride[k]], dtype=np.int64)
    for j in range(k - 1, -1, -1):
        steps = (np.arange(inter[j][0], inter[j][1], dtype=np.int64) - cbox[j][0]) * stride[j]
        starts = (steps[:, None] + starts[None, :]).reshape(-1)
    return starts, (inter[k][1] - inter[k][0]) * stride[k]


def _blocks_needed(record: dict[str, Any], starts: np.ndarray, length: int) -> np.ndarray:
    """Mask of the CRC blocks of `record` that hold any byte of the runs."""
    block, size = record["block"], record["size"]
    count = -(-size // block)
    mark = np.zeros(count + 1, dtype=np.int64)
    np.add.at(mark, starts // block, 1)
    np.add.at(mark, (starts + length - 1) // block + 1, -1)
    return np.cumsum(mark[:count]) > 0


def _block_item(
    leaf: dict[str, Any], record: dict[str, Any], i: int, targets: list[Any]
) -> _native.ItemRead:
    """The read of block `i` of `record`, its CRC32C checked: bytes of a
    piece stored as is, or one frame of a byte-grouped piece, decoded
    alone."""
    block = record["block"]
    start = i * block
    length = min(block, record["size"] - start)
    stored = record.get("block_stored")
    if stored is None:
        where, count, encoding = start, length, False
    else:
        _, _, width, frame = record["encoding"]
        where, count = sum(stored[:i]), stored[i]
        encoding = (0, length, width, frame)
    return _native.ItemRead(
        record["file"],
        record["offset"] + where,
        count,
        encoding,
        record["block_crc32c"][i],
        f"{leaf['key']} piece {record['box']} block {i}",
        targets,
    )


def _read_rows(
    batch: _Batch, leaf: dict[str, Any], record: dict[str, Any], lo: int, hi: int, part: Any
) -> None:
    """Read bytes `[lo, hi)` of `record` (stored as is, with block CRCs)
    straight into `part`: the blocks covering them, each checked, the
    bytes outside the range read and dropped."""
    block = record["block"]
    out = _bytes(part)
    for i in range(lo // block, (hi - 1) // block + 1):
        b0 = i * block
        b1 = min(b0 + block, record["size"])
        a, z = max(lo, b0), min(hi, b1)
        targets: list[Any] = []
        if a > b0:
            targets.append(a - b0)
        targets.append(out[a - lo : z - lo])
        if b1 > z:
            targets.append(b1 - z)
        batch.add(_block_item(leaf, record, i, targets), 0)


def _fill_slices(batch: _Batch, leaf: dict[str, Any], slices: dict[Any, np.ndarray]) -> None:
    """Queue the reads that fill each device slice (`box` -> array) of
    `leaf`. A piece needed whole by a slice is read straight into it (its
    CRC32C checked). A piece stored as is that a slice needs only part of
    is read in whole CRC blocks covering that part (each block checked):
    into the slice when the part is whole rows of both, else once into a
    scratch copy of the piece shared by all the slices needing it. A
    byte-grouped piece of several frames is read the same way, its frames
    being its blocks (each decoded alone). Any other compressed piece is
    read whole, once, however many slices need it."""
    if not slices:
        # No device of this process holds part of the array.
        return
    itemsize = next(iter(slices.values())).dtype.itemsize
    for record in leaf["chunks"]:
        cbox = record["box"]
        if cbox and _layout.volume(cbox) == 0:
            continue
        pairs: list[tuple[Box, Box, np.ndarray]] = []
        for key, dest in slices.items():
            box = [list(b) for b in key]
            inter = _layout.intersect(cbox, box) if box else []
            if inter is not None:
                pairs.append((box, inter, dest))
        if not pairs:
            continue
        scattered: list[tuple[Box, Any]] = []
        for box, inter, dest in pairs:
            place = dest[
                tuple(slice(a - b[0], z - b[0]) for (a, z), b in zip(inter, box, strict=True))
            ]
            if not box or cbox == box:
                batch.add(_whole(leaf, record, [_bytes(dest)]), 0)
            elif inter == cbox and place.flags.c_contiguous:
                batch.add(_whole(leaf, record, [_bytes(place)]), 0)
            elif cbox[1:] == box[1:] and ("block" in record or len(pairs) == 1):
                # Whole rows of the piece and of the slice.
                row = itemsize * _layout.volume([[0, 1], *cbox[1:]])
                lo, hi = (a - cbox[0][0] for a in inter[0])
                if "block" in record:
                    _read_rows(batch, leaf, record, lo * row, hi * row, place)
                else:
                    # Compressed: decoded whole, the rows around dropped.
                    head, tail = lo * row, record["size"] - hi * row
                    targets: list[Any] = [head] if head else []
                    targets.append(_bytes(place))
                    if tail:
                        targets.append(tail)
                    batch.add(_whole(leaf, record, targets), 0)
            else:
                scattered.append((inter, place))
        if not scattered:
            continue
        if "block" not in record or len(cbox) == 0:
            _scatter_whole(batch, leaf, record, scattered)
        else:
            _scatter_blocks(batch, leaf, record, scattered, itemsize)


def _scatter_blocks(
    batch: _Batch,
    leaf: dict[str, Any],
    record: dict[str, Any],
    pairs: list[tuple[Box, Any]],
    itemsize: int,
) -> None:
    """Read the CRC blocks of `record` that hold any part `inter` of
    `pairs` into one scratch copy of the piece (each block checked), then
    copy each part into its destination."""
    cbox = record["box"]
    need = np.zeros(-(-record["size"] // record["block"]), dtype=bool)
    for inter, _ in pairs:
        starts, length = _runs(cbox, inter, itemsize)
        need |= _blocks_needed(record, starts, length)
    temp = np.empty([b - a for a, b in cbox], dtype=pairs[0][1].dtype)
    flat = _bytes(temp)
    block = record["block"]
    for i in np.flatnonzero(need).tolist():
        b0 = i * block
        batch.add(_block_item(leaf, record, i, [flat[b0 : min(b0 + block, flat.nbytes)]]), 0)
    batch.held += temp.nbytes

    def scatter() -> None:
        for inter, dest in pairs:
            src = tuple(slice(a - c[0], b - c[0]) for (a, b), c in zip(inter, cbox, strict=True))
            dest[...] = temp[src]

    batch.then(scatter)


def _target_info(label: str, target: Any, leaf: dict[str, Any], where: str) -> tuple[Any, Any]:
    """(dtype, sharding) the restored array should have; sharding None
    means a numpy array."""
    saved_shape = tuple(leaf["shape"])
    if isinstance(target, (jax.Array, jax.ShapeDtypeStruct)):
        shape, dtype = tuple(target.shape), target.dtype
        sharding = getattr(target, "sharding", None)
        if sharding is None:
            raise ValueError(
                f"{label}: the abstract tree gives no sharding for this array; restore "
                "needs one per array (jax.ShapeDtypeStruct(shape, dtype, sharding=...)) "
                "to know which devices get which slice"
            )
    elif isinstance(target, (np.ndarray, np.generic)):
        shape, dtype, sharding = np.shape(target), np.asarray(target).dtype, None
    else:
        raise TypeError(
            f"{label}: the checkpoint holds an array here, the abstract tree a "
            f"{type(target).__name__}"
        )
    if tuple(shape) != saved_shape:
        raise ValueError(
            f"{label}: the abstract tree asks for shape {tuple(shape)}, the checkpoint at "
            f"{where} holds {saved_shape}"
        )
    return jnp.dtype(dtype), sharding


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic collector off for the duration: jax hooks every
    collection (``_xla_gc_callback``, ~1.6 ms each), and planning a tree
    of a thousand leaves allocates enough to run it a hundred times. A
    restore makes no garbage cycles; any left are collected afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def restore(directory: S3DlioPath, args: S3DlioRestore) -> Any:
    with _gc_paused():
        return _restore(directory, args)


def _restore(directory: S3DlioPath, args: S3DlioRestore) -> Any:
    index = read_index(directory)
    by_key = {leaf["key"]: leaf for leaf in index["leaves"]}
    where = str(directory)
    if args.item is None:
        targets = [(leaf["key"], None) for leaf in index["leaves"]]
        treedef = None
    else:
        flat, treedef = jax.tree_util.tree_flatten_with_path(args.item)
        targets = [(jax.tree_util.keystr(p), v) for p, v in flat]
        missing = [k for k, _ in targets if k not in by_key]
        if missing:
            raise KeyError(
                f"{', '.join(missing[:5])}: not in the checkpoint at {where}, which holds "
                f"{len(by_key)} leaves: {', '.join(list(by_key)[:5])}"
                f"{', ...' if len(by_key) > 5 else ''}"
            )
        extra = sorted(set(by_key) - {k for k, _ in targets})
        if extra and not args.partial:
            raise ValueError(
                f"{', '.join(extra[:5])}: in the checkpoint at {where} but not in the "
                "abstract tree (pass S3DlioRestore(..., partial=True) to leave them out)"
            )
    results: list[Any] = [None] * len(targets)
    batch = _Batch(directory, args.thread_count, results)
    for n, (key, target) in enumerate(targets):
        _plan_leaf(batch, by_key[key], target, results, n, where)
    batch.flush()
    if treedef is None:
        return _layout.nest(
            [(leaf["path"], value) for leaf, value in zip(index["leaves"], results, strict=True)]
        )
    return jax.tree_util.tree_unflatten(treedef, results)


def _plan_leaf(
    batch: _Batch, leaf: dict[str, Any], target: Any, results: list[Any], n: int, where: str
) -> None:
    label, kind = leaf["key"], leaf["kind"]
    if kind in ("scalar", "string"):
        value = leaf["value"]
        if leaf.get("type") == "float":
            value = float(value)
        results[n] = value
        return
    stored = jnp.dtype(leaf["dtype"])
    shape = tuple(leaf["shape"])
    if target is None:
        dtype, sharding = stored, None
    else:
        dtype, sharding = _target_info(label, target, leaf, where)
    if sharding is None:
        dest = host_buffer(shape, stored)
        _fill(batch, leaf, dest)

        def done_host() -> None:
            results[n] = dest if dtype == stored else dest.astype(dtype)

        batch.then(done_host)
        return
    slices: dict[tuple[tuple[int, int], ...], np.ndarray] = {}
    for index in sharding.addressable_devices_indices_map(shape).values():
        box = normalize(index, shape)
        key = tuple(tuple(b) for b in box)
        if key not in slices:
            slices[key] = host_buffer([b - a for a, b in box], stored)
    _fill_slices(batch, leaf, slices)
    if len(sharding.device_set) == 1 and len(slices) == 1:
        (only,) = slices.values()

        def done_single() -> None:
            batch.puts.append((n, only if dtype == stored else only.astype(dtype), sharding))

        batch.then(done_single)
        return

    def done_device() -> None:
        def piece(index: tuple[slice, ...]) -> np.ndarray:
            got = slices[tuple(tuple(b) for b in normalize(index, shape))]
            return got if dtype == stored else got.astype(dtype)

        # dtype given: a process none of whose devices hold a shard calls
        # no callback, and JAX cannot learn the dtype from one.
        results[n] = jax.make_array_from_callback(shape, sharding, piece, dtype=dtype)

    batch.then(done_device)
