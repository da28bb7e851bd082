"""`S3DlioWriter`: torch DCP's `StorageWriter` on every s3dlio backend."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import STATE_DICT_TYPE, Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from s3dlio import _native
from s3dlio_torch import _async_staging, _framing, _layout, _staging
from s3dlio_torch._gc_freeze import GcFreeze
from s3dlio_torch._layout import FilePrefix, ItemRecord

log = logging.getLogger(__name__)

# torch's own writer records this version in `.metadata`.
DCP_VERSION = "1.0.0"
# Element sizes the byte-grouping filter handles (fp16/bf16, fp32, fp64).
# Items handed to the pack writer in one call when it writes in place: a
# native call per item (and the GIL hand-over around it) costs more than
# writing a small tensor; the bound keeps the other data files' threads
# fed with the GIL and the resolved tensors held at once small.
BATCH_BYTES = 16 << 20
BATCH_ITEMS = 256
# A tensor item's torch.save framing around its bytes (~1.6 KiB), rounded up.
FRAMING_BYTES = 4 << 10
# Room left in a data file that must stay below the store's single-request
# limit, for byte items (their size is unknown until they are resolved).
BLOB_ROOM = 1 << 20


class CheckpointExistsError(FileExistsError, RuntimeError):
    """A checkpoint is already at the target and ``overwrite=False`` (our
    default; torch's writers overwrite). A `FileExistsError` and, like the
    RuntimeError torch raises, a `RuntimeError`, so code matching either
    (or torch's phrase "Checkpoint already exists") keeps working."""


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_encoding(level: int | None, byte_grouping: bool | None) -> None:
    """Python types here; the rules (levels 1-22, byte_grouping=True needs a
    level) are the core's, so every binding says the same."""
    if level is not None and (not isinstance(level, int) or isinstance(level, bool)):
        raise ValueError(f"compression level {level!r} is not an integer (valid levels are 1-22)")
    if byte_grouping is not None and not isinstance(byte_grouping, bool):
        raise ValueError(f"byte_grouping must be True, False or None, got {byte_grouping!r}")
    _native.check_encoding(level, byte_grouping)


def resolve(path: str | os.PathLike, storage_options: dict[str, str] | None) -> str:
    """The canonical URI of a checkpoint location (ValueError if unusable)."""
    return _native.resolve_uri(os.fspath(path), storage_options)


class S3DlioWriter(StorageWriter):
    """Writes a DCP checkpoint to ``path`` on any s3dlio backend (a plain
    local path, ``file://``, ``direct://``, ``s3://``, ``az://``).

    The layout is torch's, so ``FileSystemReader`` loads a local checkpoint
    written here, uncompressed or compressed with ``byte_grouping=False``
    (byte-grouped float items need `S3DlioReader`). Every item gets a CRC32C that
    `S3DlioReader` checks. ``.metadata`` is written last, by the
    coordinator, and data files get names no earlier checkpoint uses, so a
    failed save leaves the previous checkpoint at ``path`` intact.

    Args:
        path: checkpoint location (a directory or object prefix).
        compression_level: zstd level 1-22, or None to store items as they
            are.
        byte_grouping: how float tensors (fp16, bf16, fp32, fp64) are
            compressed. None (the default) or True: byte-grouped (each
            element's bytes split into planes before entropy coding; much
            smaller than plain zstd on weights), which only s3dlio reads
            back; True also insists on a compression level. False: one
            plain zstd frame per item, which torch's own
            ``FileSystemReader`` decodes too (with ``zstandard``
            installed). Other items are always plain zstd frames.
        thread_count: data files written in parallel per rank (default:
            the number of CPUs, at most 8). On object stores a rank's items
            go into as many files as it takes to keep each below the size
            the store uploads in one request (the multipart threshold).
        part_size: bytes handed to the store at once (the multipart part
            size on object stores).
        overwrite: replace an existing checkpoint at ``path``; when False
            (the default) an existing one is refused before anything is
            written.
        verify: record a CRC32C per item (checked at load).
        sync_files: make data and metadata durable (fsync) before the save
            returns, like torch's ``FileSystemWriter`` (local backends).
        storage_options: backend settings (credentials, endpoints, ...).
        freeze_gc: keep Python's cyclic garbage collector off the objects
            that existed before the save (``gc.freeze()``) from this rank's
            first storage hook to its last: torch's planning allocates
            objects per item that otherwise cost several full collections
            of the whole heap per save. Given back (``gc.unfreeze()``) when
            the save ends or fails.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        compression_level: int | None = None,
        byte_grouping: bool | None = None,
        thread_count: int | None = None,
        part_size: int | None = None,
        overwrite: bool = False,
        verify: bool = True,
        sync_files: bool = True,
        storage_options: dict[str, str] | None = None,
        freeze_gc: bool = True,
    ) -> None:
        super().__init__()
        _check_encoding(compression_level, byte_grouping)
        _check_positive("thread_count", thread_count)
        _check_positive("part_size", part_size)
        _check_flag("freeze_gc", freeze_gc)
        self.storage_options = dict(storage_options) if storage_options else None
        self.path = resolve(path, self.storage_options)
        # What the caller named, recorded as is in storage_meta (as torch's
        # own writers do); `path` is the canonical URI used for I/O.
        self.given_id: str | os.PathLike = path
        self.compression_level = compression_level
        self.byte_grouping = byte_grouping
        self.thread_count = thread_count or min(8, os.cpu_count() or 1)
        self.part_size = part_size
        self.overwrite = overwrite
        self.verify = verify
        self.sync_files = sync_files
        self.save_id = str(uuid.uuid4())
        self.rank: int | None = None
        self.use_collectives = True
        self.is_coordinator = False
        self.freeze_gc = freeze_gc
        self._gc = GcFreeze()

    # -- AsyncStager (what `dcp.async_save` copies first) ----------------

    # The copy is complete when `stage` returns: nothing to wait for later.
    _synchronize_after_execute = False

    @property
    def should_synchronize_after_execute(self) -> bool:
        return self._synchronize_after_execute

    def stage(self, state_dict: STATE_DICT_TYPE) -> STATE_DICT_TYPE:
        """The host copy of `state_dict` that `dcp.async_save` writes while
        training goes on: host memory kept from save to save (pinned for
        device tensors once reused), device copies waited for once
        (`_async_staging`)."""
        return _async_staging.STAGING.stage(state_dict)

    def synchronize_staging(self) -> None:
        """Nothing to wait for: `stage` returns a finished copy."""

    def close(self) -> None:
        """Free the host copies `stage` keeps for the next save (they are
        the process's, not this writer's: any writer's next `stage`
        allocates again). torch never calls this for a storage writer."""
        _async_staging.STAGING.release()

    # -- StorageWriter ---------------------------------------------------

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id:
            self.path = resolve(checkpoint_id, self.storage_options)
            self.given_id = checkpoint_id
        self.save_id = str(uuid.uuid4())

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator
        self.rank = kwargs.get("rank")
        self.use_collectives = kwargs.get("use_collectives", True)
        self._gc.begin(self, self.freeze_gc)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        with self._gc.released_on_failure():
            return self._prepare_local_plan(plan)

    def _prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        if not self.overwrite:
            existing = self._existing_metadata()
            if existing:
                raise CheckpointExistsError(
                    f"Checkpoint already exists at {self.path} ({', '.join(existing)}) "
                    "and overwrite=False (s3dlio's default, unlike torch's writers); "
                    "pass overwrite=True to replace it"
                )
        if self.rank is not None and not self.use_collectives:
            # No global plan will name this rank's files: do it here.
            plan = dataclasses.replace(plan, storage_data=FilePrefix(f"__{self.rank}_", self._tag))
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        return [
            plan
            if plan.storage_data is not None
            else dataclasses.replace(plan, storage_data=FilePrefix(f"__{i}_", self._tag))
            for i, plan in enumerate(plans)
        ]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        with self._gc.released_on_failure():
            fut = self._write_data(plan, planner)
        # finish, the last hook, runs on the coordinator only (and on every
        # rank without collectives).
        if self.use_collectives and not self.is_coordinator:
            self._gc.release()
        return fut

    def _write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        prefix: FilePrefix = plan.storage_data
        # On object stores, data files stay below the size the store
        # uploads in one request: a multipart upload costs the server a
        # second pass over the bytes (s3s-fs re-reads and re-hashes every
        # part to assemble the object), and an object in one PUT is sent
        # from the tensors' memory without joining it into parts.
        limit = _native.single_put_limit(self.path, self.part_size, self.storage_options)
        cap = None if limit is None else max(1, limit - 1 - BLOB_ROOM)
        buckets = [b for b in _balance(plan.items, self.thread_count, cap) if b]
        parallel = min(self.thread_count, len(buckets))
        cancel = threading.Event()
        frames = _framing.FrameCache()
        results: list[WriteResult] = []
        if parallel <= 1:
            for n, bucket in enumerate(buckets):
                results += self._write_file(prefix.file_name(n), bucket, planner, cancel, 1, frames)
        else:
            with ThreadPoolExecutor(parallel, thread_name_prefix="s3dlio-dcp") as pool:
                futures = [
                    pool.submit(
                        self._write_file,
                        prefix.file_name(n),
                        bucket,
                        planner,
                        cancel,
                        parallel,
                        frames,
                    )
                    for n, bucket in enumerate(buckets)
                ]
                for f in futures:
                    results += f.result()
        fut: Future[list[WriteResult]] = Future()
        fut.set_result(results)
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        try:
            self._finish(metadata, results)
        finally:
            self._gc.release()

    def _finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        if hasattr(metadata, "version"):
            metadata.version = DCP_VERSION
        metadata.storage_data = {wr.index: wr.storage_data for rs in results for wr in rs}
        metadata.storage_meta = self.storage_meta()
        rank = None if self.use_collectives or self.rank is None else self.rank
        name = _layout.metadata_name(rank)
        uri = _layout.child(self.path, name)
        replaced = self._referenced_by_existing(rank) if self.overwrite else None
        committed = _native.put_object(
            uri,
            pickle.dumps(metadata),
            exclusive=not self.overwrite,
            fsync=self.sync_files,
            storage_options=self.storage_options,
        )
        if not committed:
            raise CheckpointExistsError(
                f"Checkpoint already exists: {uri} appeared while this checkpoint was being "
                "saved (overwrite=False); the checkpoint already there is kept, "
                "pass overwrite=True to replace it"
            )
        if replaced is not None:
            self._remove_replaced(replaced, metadata.storage_data, rank)

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=self.given_id, save_id=self.save_id)

    @property
    def checkpoint_id(self) -> str:
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        try:
            resolve(checkpoint_id, None)
        except (ValueError, TypeError):
            return False
        return True

    # -- writing -----------------------------------------------------------

    @property
    def _tag(self) -> str:
        return self.save_id.replace("-", "")[:12]

    def _write_file(
        self,
        name: str,
        items: list[WriteItem],
        planner: SavePlanner,
        cancel: threading.Event,
        files: int,
        frames: _framing.FrameCache,
    ) -> list[WriteResult]:
        compressed = self.compression_level is not None
        cpus = os.cpu_count() or 1
        writer = _native.PackWriter(
            _layout.child(self.path, name),
            compression_level=self.compression_level,
            zstd_workers=max(1, cpus // files) if compressed else 0,
            checksum=self.verify,
            part_size=self.part_size,
            fsync=self.sync_files,
            storage_options=self.storage_options,
        )
        results: list[WriteResult] = []
        try:
            with writer:
                if writer.in_place:
                    self._write_batched(writer, name, items, planner, cancel, frames, results)
                    return results
                for item, data in _staging.staged(items, planner.resolve_data):
                    _check_cancel(cancel, name)
                    segments, tensor = _segments(item, data, frames)
                    group = self._byte_group(tensor) if compressed else None
                    placed = writer.write_item(segments, group)
                    del segments
                    results.append(self._result(name, item, placed, tensor))
        except BaseException:
            cancel.set()
            raise
        return results

    def _write_batched(
        self,
        writer: _native.PackWriter,
        name: str,
        items: list[WriteItem],
        planner: SavePlanner,
        cancel: threading.Event,
        frames: _framing.FrameCache,
        results: list[WriteResult],
    ) -> None:
        """Uncompressed items written in place, `BATCH_ITEMS` /
        `BATCH_BYTES` per native call."""
        batch: list[list[Any]] = []
        layouts: list[tuple[WriteItem, _framing.TensorLayout | None]] = []
        held = 0

        def flush() -> None:
            placed = writer.write_items(batch)
            for (item, tensor), one in zip(layouts, placed, strict=True):
                results.append(self._result(name, item, one, tensor))
            batch.clear()
            layouts.clear()

        for item, data in _staging.staged(items, planner.resolve_data):
            _check_cancel(cancel, name)
            segments, tensor = _segments(item, data, frames)
            batch.append(segments)
            layouts.append((item, tensor))
            held += sum(memoryview(s).nbytes for s in segments)
            if held >= BATCH_BYTES or len(batch) >= BATCH_ITEMS:
                flush()
                held = 0
        if batch:
            flush()

    def _result(
        self,
        name: str,
        item: WriteItem,
        placed: _native.PackedItem,
        tensor: _framing.TensorLayout | None,
    ) -> WriteResult:
        """The WriteResult of one item the pack writer placed in `name`."""
        grouping = placed.grouping
        if grouping is not None:
            descriptors = [_layout.GROUPED_DESCRIPTOR]
        elif self.compression_level is not None:
            descriptors = [_layout.ZSTD_DESCRIPTOR]
        else:
            descriptors = None
        info = _StorageInfo(name, placed.offset, placed.length, transform_descriptors=descriptors)
        ItemRecord(placed.size, placed.crc32c, tensor, grouping).attach(info)
        return WriteResult(index=item.index, size_in_bytes=placed.length, storage_data=info)

    def _byte_group(self, tensor: _framing.TensorLayout | None) -> tuple[int, int] | None:
        """`(segment, width)` asking the pack writer to byte-group a float
        tensor's storage bytes (segment 1 of `_segments`), or None."""
        if self.byte_grouping is False or tensor is None or tensor.nbytes == 0:
            return None
        width = _native.byte_group_width(tensor.torch_dtype)
        return None if width is None else (1, width)

    # -- commit ------------------------------------------------------------

    def _names(self) -> list[str]:
        prefix = self.path.rstrip("/") + "/"
        return [
            uri[len(prefix) :]
            for uri in _native.list(prefix, self.storage_options)
            if uri.startswith(prefix) and "/" not in uri[len(prefix) :]
        ]

    def _existing_metadata(self) -> list[str]:
        return sorted(n for n in self._names() if _layout.is_metadata_name(n))

    def _referenced_by_existing(self, rank: int | None) -> tuple[set[str], list[str]]:
        """Data files the metadata this save replaces refers to, and the
        stale metadata files to remove once it is committed."""
        names = self._existing_metadata()
        if rank is None:
            replaced = names
            stale = [n for n in names if n != _layout.METADATA]
        else:
            own = _layout.metadata_name(rank)
            replaced = [own] if own in names else []
            stale = []
        files: set[str] = set()
        for name in replaced:
            uri = _layout.child(self.path, name)
            try:
                old = pickle.loads(_native.get_bytes(uri, self.storage_options))
                files |= {info.relative_path for info in old.storage_data.values()}
            except Exception as e:  # noqa: BLE001 - reported, the save itself is fine
                log.warning("cannot read %s to clean up after it: %s", uri, e)
        return files, stale

    def _remove_replaced(
        self, replaced: tuple[set[str], list[str]], storage_data: dict, rank: int | None
    ) -> None:
        files, stale = replaced
        keep = {info.relative_path for info in storage_data.values()}
        for name in sorted((files - keep) | set(stale)):
            uri = _layout.child(self.path, name)
            try:
                _native.delete(uri, self.storage_options)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("checkpoint committed, but %s of the replaced one remains: %s", uri, e)


def _check_cancel(cancel: threading.Event, name: str) -> None:
    """Stop writing `name` once another data file of the save failed."""
    if cancel.is_set():
        raise RuntimeError(f"{name}: abandoned because another data file failed")


def _segments(
    item: WriteItem, data: Any, frames: _framing.FrameCache
) -> tuple[list[Any], _framing.TensorLayout | None]:
    """The buffers making up one item's logical bytes."""
    if item.type == WriteItemType.BYTE_IO:
        if not isinstance(data, io.BytesIO):
            raise TypeError(f"{item.index.fqn}: expected io.BytesIO for a bytes item")
        return [data.getbuffer()], None
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{item.index.fqn}: expected a tensor, got {type(data).__name__}")
    if not _framing.zero_copy_able(data.detach()):
        return [_framing.full_save(data.detach().cpu())], None
    tensor = _framing.minimal_cpu(data)
    header, trailer, layout = frames.frame(tensor)
    return [header, _framing.storage_bytes(tensor), trailer], layout


def _item_bytes(item: WriteItem) -> int:
    if item.tensor_data is None:
        return 0
    numel = 1
    for n in item.tensor_data.size:
        numel *= n
    return numel * item.tensor_data.properties.dtype.itemsize + FRAMING_BYTES


def _balance(items: list[WriteItem], bins: int, cap: int | None = None) -> list[list[WriteItem]]:
    """Spread items over `bins` files: byte items round-robin, tensors
    largest first onto the lightest file. With `cap`, files are added
    (from at least as many as `cap` bytes each need) so that none grows
    past `cap` bytes unless one item alone does."""
    tensors = sorted(
        (i for i in items if i.type != WriteItemType.BYTE_IO), key=_item_bytes, reverse=True
    )
    if cap is not None:
        bins = max(bins, -(-sum(map(_item_bytes, tensors)) // cap))
    buckets: list[list[WriteItem]] = [[] for _ in range(bins)]
    sizes = [0] * bins
    blobs = [i for i in items if i.type == WriteItemType.BYTE_IO]
    for n, item in enumerate(blobs):
        buckets[n % bins].append(item)
    for item in tensors:
        size = _item_bytes(item)
        lightest = min(range(len(sizes)), key=sizes.__getitem__)
        if cap is not None and sizes[lightest] and sizes[lightest] + size > cap:
            buckets.append([])
            sizes.append(0)
            lightest = len(sizes) - 1
        buckets[lightest].append(item)
        sizes[lightest] += size
    return buckets
