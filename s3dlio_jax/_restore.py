"""Restore of a tree saved by `S3DlioCheckpointHandler`: each process reads
the stored pieces overlapping its devices' slices (each piece whole, its
CRC32C checked) straight into the slices where the layout allows, and
builds arrays with ``jax.make_array_from_callback``."""

from __future__ import annotations

from collections.abc import Callable
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

    def __init__(self, directory: S3DlioPath, threads: int) -> None:
        self.directory = directory
        self.threads = threads
        self.items: list[_native.ItemRead] = []
        self.after: list[Callable[[], None]] = []
        self.held = 0

    def add(self, item: tuple[Any, ...], held: int) -> None:
        self.items.append(_native.ItemRead(*item))
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


def _bytes(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(np.uint8)


def _encoding(record: dict[str, Any]) -> Any:
    enc = record["encoding"]
    return tuple(enc) if isinstance(enc, list) else bool(enc)


def _fill(batch: _Batch, leaf: dict[str, Any], box: Box, dest: np.ndarray) -> None:
    """Queue the reads that fill `dest`, the slice `box` of `leaf`."""
    itemsize = dest.dtype.itemsize
    for record in leaf["chunks"]:
        cbox = record["box"]
        inter = _layout.intersect(cbox, box) if box else []
        if inter is None or (box and _layout.volume(cbox) == 0):
            continue
        where = (
            record["file"],
            record["offset"],
            record["length"],
            _encoding(record),
            record["crc32c"],
            f"{leaf['key']} piece {cbox}",
        )
        if not box or cbox == box:
            batch.add((*where, [_bytes(dest)]), 0)
            continue
        if all(c == b for c, b in zip(cbox[1:], box[1:], strict=True)):
            # Whole rows of dest: read into them, skip the piece's others.
            row = itemsize * _layout.volume([[0, 1], *cbox[1:]])
            lo, hi = inter[0]
            part = dest[lo - box[0][0] : hi - box[0][0]]
            targets: list[Any] = []
            if lo > cbox[0][0]:
                targets.append((lo - cbox[0][0]) * row)
            targets.append(_bytes(part))
            if cbox[0][1] > hi:
                targets.append((cbox[0][1] - hi) * row)
            batch.add((*where, targets), 0)
            continue
        temp = np.empty([b - a for a, b in cbox], dtype=dest.dtype)
        batch.add((*where, [_bytes(temp)]), temp.nbytes)

        def scatter(temp: np.ndarray = temp, cbox: Box = cbox, inter: Box = inter) -> None:
            src = tuple(slice(a - c[0], b - c[0]) for (a, b), c in zip(inter, cbox, strict=True))
            dst = tuple(slice(a - c[0], b - c[0]) for (a, b), c in zip(inter, box, strict=True))
            dest[dst] = temp[src]

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


def restore(directory: S3DlioPath, args: S3DlioRestore) -> Any:
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
    batch = _Batch(directory, args.thread_count)
    results: list[Any] = [None] * len(targets)
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
        dest = np.empty(shape, dtype=stored)
        _fill(batch, leaf, [[0, d] for d in shape], dest)

        def done_host() -> None:
            results[n] = dest if dtype == stored else dest.astype(dtype)

        batch.then(done_host)
        return
    slices: dict[tuple[tuple[int, int], ...], np.ndarray] = {}
    for index in sharding.addressable_devices_indices_map(shape).values():
        box = normalize(index, shape)
        key = tuple(tuple(b) for b in box)
        if key not in slices:
            slices[key] = np.empty([b - a for a, b in box], dtype=stored)
            _fill(batch, leaf, box, slices[key])

    def done_device() -> None:
        def piece(index: tuple[slice, ...]) -> np.ndarray:
            got = slices[tuple(tuple(b) for b in normalize(index, shape))]
            return got if dtype == stored else got.astype(dtype)

        results[n] = jax.make_array_from_callback(shape, sharding, piece)

    batch.then(done_device)
