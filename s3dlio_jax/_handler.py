"""`S3DlioCheckpointHandler`: Orbax's ``AsyncCheckpointHandler`` over the
s3dlio pack layer, and the handler registry to give the manager."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint._src import asyncio_utils
from orbax.checkpoint._src.futures import future as orbax_future

from s3dlio import _native
from s3dlio_jax import _layout, _restore, _save
from s3dlio_jax._args import S3DlioRestore, S3DlioSave
from s3dlio_jax._path import S3DlioPath


def _our_path(directory: Any) -> S3DlioPath:
    if not isinstance(directory, S3DlioPath):
        raise TypeError(
            f"S3DlioCheckpointHandler writes through s3dlio paths only, got {directory!r}: "
            "give the CheckpointManager s3dlio_jax.path(uri)"
        )
    return directory


def _flatten(tree: Any) -> list[tuple[tuple[Any, ...], Any]]:
    return jax.tree_util.tree_flatten_with_path(tree)[0]


class S3DlioCheckpointHandler(ocp.AsyncCheckpointHandler):
    """Saves and restores pytrees of arrays through s3dlio.

    Each process writes its own addressable shards (``replica_id == 0``),
    the primary also the host values; every piece gets a CRC32C that
    restore checks. ``finalize`` (primary, after every process wrote)
    merges the processes' indexes; Orbax writes the commit file after it.
    """

    def __init__(self, primary_host: int = 0) -> None:
        self._primary_host = primary_host
        self._pending: dict[str, Any] = {}

    # -- save ----------------------------------------------------------------

    async def async_save(
        self, directory: epath.Path, args: S3DlioSave
    ) -> list[orbax_future.Future] | None:
        directory = _our_path(directory)
        if not isinstance(args, S3DlioSave):
            raise TypeError(f"expected S3DlioSave, got {type(args).__name__}")
        flat = _flatten(args.item)
        leaves: list[dict[str, Any]] = []
        labelled: list[tuple[str, Any]] = []
        for keypath, value in flat:
            label = jax.tree_util.keystr(keypath)
            leaves.append(self._describe(label, keypath, value))
            labelled.append((label, value))

        process = jax.process_index()
        primary = process == self._primary_host
        uri = str(directory)
        threads = args.thread_count or min(8, os.cpu_count() or 1)
        budget = _save.Budget(args.max_host_bytes)
        writers = _save.Writers(
            uri,
            process,
            threads,
            args.compression_level,
            args.byte_grouping,
            budget,
            directory._storage_options,
        )
        header = {
            "format": _layout.FORMAT,
            "version": _layout.VERSION,
            "process": process,
            "process_count": jax.process_count(),
            "compression_level": args.compression_level,
        }
        if primary:
            header["leaves"] = leaves

        async def write() -> None:
            await asyncio.to_thread(writers.run)
            doc = dict(header, chunks=[[leaf, rec] for leaf, rec in writers.records])
            _native.put_object(
                _layout.child(uri, _layout.process_index_name(process)),
                _layout.dumps(doc),
                storage_options=directory._storage_options,
            )

        commit = orbax_future.CommitFutureAwaitingContractedSignals(write(), name="s3dlio_jax_save")
        try:
            _save.stage(labelled, writers.put, budget, args.chunk_bytes, primary)
        finally:
            writers.close_input()
        return [commit]

    def save(self, directory: epath.Path, *args: Any, **kwargs: Any) -> None:
        async def run() -> None:
            for f in await self.async_save(directory, *args, **kwargs) or []:
                f.result()

        asyncio_utils.run_sync(run())

    @staticmethod
    def _describe(label: str, keypath: tuple[Any, ...], value: Any) -> dict[str, Any]:
        kind = _save.leaf_kind(value)
        leaf: dict[str, Any] = {"key": label, "path": _layout.encode_path(keypath), "kind": kind}
        if kind in ("jax", "numpy"):
            dtype = np.dtype(value.dtype)
            leaf["dtype"] = dtype.name
            leaf["shape"] = list(np.shape(value))
        elif kind == "scalar":
            leaf["type"] = type(value).__name__
            leaf["value"] = value
        elif kind == "string":
            leaf["value"] = value
        else:
            raise TypeError(
                f"{label}: cannot save a {kind}; S3DlioSave takes jax.Array, numpy arrays, "
                "Python scalars and strings"
            )
        return leaf

    def finalize(self, directory: epath.Path) -> None:
        """Merge the processes' indexes into the item's index (primary,
        after every process finished writing)."""
        directory = _our_path(directory)
        uri = str(directory)
        opts = directory._storage_options
        _, objects = _native.list_dir(uri, opts)
        found = {}
        for obj_uri, _, _ in objects:
            m = _layout.PROCESS_INDEX.fullmatch(obj_uri.rsplit("/", 1)[-1])
            if m:
                found[int(m.group(1))] = obj_uri
        docs = {p: _layout.loads(_native.get_object(u, opts), u) for p, u in found.items()}
        primary = docs.get(self._primary_host)
        if primary is None or "leaves" not in primary:
            raise FileNotFoundError(
                f"{uri}: the primary process's index "
                f"{_layout.process_index_name(self._primary_host)} is missing; "
                "the save did not complete"
            )
        count = primary["process_count"]
        missing = sorted(set(range(count)) - set(docs))
        if missing:
            raise FileNotFoundError(
                f"{uri}: no index from process(es) {missing} of {count}; the save did not complete"
            )
        leaves = primary["leaves"]
        for leaf in leaves:
            leaf["chunks"] = []
        for p in sorted(docs):
            for n, record in docs[p]["chunks"]:
                leaves[n]["chunks"].append(dict(record, process=p))
        for leaf in leaves:
            _check_covered(uri, leaf)
        index = {
            "format": _layout.FORMAT,
            "version": _layout.VERSION,
            "process_count": count,
            "compression_level": primary["compression_level"],
            "leaves": leaves,
        }
        _native.put_object(
            _layout.child(uri, _layout.INDEX), _layout.dumps(index), storage_options=opts
        )

    # -- restore ---------------------------------------------------------------

    def restore(self, directory: epath.Path, args: S3DlioRestore | None = None) -> Any:
        directory = _our_path(directory)
        args = args or S3DlioRestore()
        if not isinstance(args, S3DlioRestore):
            raise TypeError(f"expected S3DlioRestore, got {type(args).__name__}")
        return _restore.restore(directory, args)

    def metadata(self, directory: epath.Path) -> Any:
        """The saved tree with ``jax.ShapeDtypeStruct`` for arrays."""
        return _restore.metadata(_our_path(directory))

    def close(self) -> None:
        pass


def _check_covered(uri: str, leaf: dict[str, Any]) -> None:
    """Every element of an array leaf is in exactly one stored piece."""
    if leaf["kind"] not in ("jax", "numpy"):
        return
    total = _layout.volume([[0, d] for d in leaf["shape"]])
    stored = sum(_layout.volume(c["box"]) for c in leaf["chunks"])
    if stored != total:
        raise ValueError(
            f"{uri}: leaf {leaf['key']} has {stored} of its {total} elements stored; "
            "a process did not write its shards"
        )


ocp.args.register_with_handler(S3DlioCheckpointHandler, for_save=True)(S3DlioSave)
ocp.args.register_with_handler(S3DlioCheckpointHandler, for_restore=True)(S3DlioRestore)
