"""`S3DlioReader`: torch DCP's `StorageReader` on every s3dlio backend."""

from __future__ import annotations

import io
import os
import pickle
import uuid
from collections.abc import Callable, Sequence
from typing import IO, Any, cast

import torch
from torch.distributed.checkpoint._extension import ExtensionRegistry, StreamTransformExtension
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from s3dlio import _native
from s3dlio_torch import _framing, _layout
from s3dlio_torch._gc_freeze import GcFreeze
from s3dlio_torch._layout import ItemRecord
from s3dlio_torch._writer import _check_flag, _check_positive, resolve

# Memory held at once for items that cannot be read straight into their
# destination (resharded chunks, foreign items): reads are done in batches.
BATCH_BYTES = 512 << 20


def _narrow(t: torch.Tensor, offsets: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
    for dim, (start, length) in enumerate(zip(offsets, lengths, strict=True)):
        if start != 0 or length != t.size(dim):
            t = t.narrow(dim, start, length)
    return t


def _copy_into(req: ReadItem, source: torch.Tensor, planner: LoadPlanner) -> None:
    """Copy the part of a stored chunk `req` asks for into its destination."""
    piece = _narrow(source, req.storage_offsets, req.lengths)
    target = planner.resolve_tensor(req).detach()
    if target.size() != piece.size():
        raise ValueError(
            f"{_layout.label(req.storage_index)}: destination has shape {tuple(target.shape)}, "
            f"the checkpoint holds {tuple(piece.shape)}"
        )
    target.copy_(piece)
    planner.commit_tensor(req, target)


class _Batch:
    """Native reads collected, then issued all at once (coalesced and in
    parallel), followed by what each item needs done with its bytes."""

    def __init__(self, reader: S3DlioReader) -> None:
        self.reader = reader
        self.items: list[_native.ItemRead] = []
        self.after: list[Callable[[], None]] = []
        self.held = 0

    def add(self, item: _native.ItemRead, held: int, after: Callable[[], None] | None) -> None:
        if self.held + held > BATCH_BYTES and self.items:
            self.flush()
        self.items.append(item)
        self.held += held
        if after is not None:
            self.after.append(after)

    def flush(self) -> None:
        items, after = self.items, self.after
        self.items, self.after, self.held = [], [], 0
        if items:
            _native.read_items(
                self.reader.path,
                items,
                thread_count=self.reader.thread_count,
                storage_options=self.reader.storage_options,
            )
        for step in after:
            step()


class S3DlioReader(StorageReader):
    """Loads a DCP checkpoint from ``path`` on any s3dlio backend: ones
    written by `S3DlioWriter` (every item's CRC32C checked, bytes read
    straight into the destination tensors) and ones written by torch's own
    ``FileSystemWriter``.

    Args:
        path: checkpoint location.
        thread_count: ranged reads in flight at once (default 8).
        storage_options: backend settings (credentials, endpoints, ...).
        _extension_registry: stream transforms for items written with
            torch's ``_extensions`` (as torch's ``FileSystemReader`` takes).
        freeze_gc: keep Python's cyclic garbage collector off the objects
            that existed before the load while the metadata is unpickled
            and from ``set_up_storage_reader`` to the end of ``read_data``
            (see `S3DlioWriter`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        _extension_registry: ExtensionRegistry | None = None,
        *,
        thread_count: int | None = None,
        storage_options: dict[str, str] | None = None,
        freeze_gc: bool = True,
    ) -> None:
        super().__init__()
        self.extension_registry = _extension_registry or ExtensionRegistry()
        _check_positive("thread_count", thread_count)
        _check_flag("freeze_gc", freeze_gc)
        self.storage_options = dict(storage_options) if storage_options else None
        self.path = resolve(path, self.storage_options)
        self.thread_count = thread_count or 8
        self.storage_data: dict[MetadataIndex, Any] = {}
        self.load_id = str(uuid.uuid4())
        self.rank: int | None = None
        self.use_collectives = True
        self.freeze_gc = freeze_gc
        self._gc = GcFreeze()

    # -- StorageReader ---------------------------------------------------

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        self.storage_data = {}
        if checkpoint_id:
            self.path = resolve(checkpoint_id, self.storage_options)
        self.load_id = str(uuid.uuid4())

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        uri = _layout.child(self.path, _layout.metadata_name(kwargs.get("rank")))
        try:
            blob = _native.get_bytes(uri, self.storage_options)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"no distributed checkpoint at {self.path}: {uri} does not exist"
            ) from e
        with self._gc.held_during(self, self.freeze_gc):
            metadata = pickle.loads(blob)
        if not isinstance(metadata, Metadata):
            raise ValueError(f"{uri} is not DCP metadata (got {type(metadata).__name__})")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        if metadata.storage_data is None:
            raise ValueError(f"{self.path}: checkpoint metadata has no storage data")
        self.storage_data = metadata.storage_data
        self.rank = kwargs.get("rank")
        self.use_collectives = kwargs.get("use_collectives", True)
        self._gc.begin(self, self.freeze_gc)

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        # The last storage hook of a load on every rank.
        try:
            return self._read_data(plan, planner)
        finally:
            self._gc.release()

    def _read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        by_item: dict[MetadataIndex, list[ReadItem]] = {}
        for req in plan.items:
            by_item.setdefault(req.storage_index, []).append(req)
        batch = _Batch(self)
        for index, reqs in by_item.items():
            self._plan_item(batch, index, reqs, planner)
        batch.flush()
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

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

    # -- reading -----------------------------------------------------------

    def _plan_item(
        self, batch: _Batch, index: MetadataIndex, reqs: list[ReadItem], planner: LoadPlanner
    ) -> None:
        info: _StorageInfo = self.storage_data[index]
        label = _layout.label(index)
        descriptors = tuple(info.transform_descriptors or ())
        record = ItemRecord.of(info)
        ours = ((), (_layout.ZSTD_DESCRIPTOR,), (_layout.GROUPED_DESCRIPTOR,))
        if record is None or descriptors not in ours:
            # Written by torch (or with extensions s3dlio does not decode):
            # fetch the stored bytes, decode them the way torch does.
            raw = bytearray(info.length)
            item = _native.ItemRead(
                info.relative_path, info.offset, info.length, False, None, label, [raw]
            )
            batch.add(item, info.length, lambda: self._decode_foreign(info, reqs, raw, planner))
            return
        encoding: bool | tuple[int, int, int, int] = descriptors == (_layout.ZSTD_DESCRIPTOR,)
        if descriptors == (_layout.GROUPED_DESCRIPTOR,):
            if record.grouping is None:
                raise ValueError(f"{label}: byte-grouped item without its grouping in {self.path}")
            encoding = record.grouping
        where = (info.relative_path, info.offset, info.length, encoding, record.crc32c, label)
        layout = record.tensor
        if reqs[0].type == LoadItemType.BYTE_IO or layout is None:
            blob = bytearray(record.size)
            item = _native.ItemRead(*where, [blob])
            batch.add(item, record.size, lambda: self._decode(reqs, blob, planner))
            return
        trailer = record.size - layout.header - layout.nbytes
        if trailer < 0:
            raise ValueError(f"{label}: inconsistent item record in {self.path} metadata")
        target = self._direct_target(reqs, layout, planner)
        if target is not None:
            req = reqs[0]
            dst = _framing.tensor_bytes(target)
            batch.add(
                _native.ItemRead(*where, [layout.header, dst, trailer]),
                0,
                lambda: planner.commit_tensor(req, target),
            )
            return
        stored = torch.empty_strided(layout.shape, layout.stride, dtype=layout.torch_dtype)
        dst = _framing.storage_bytes(stored)
        if len(dst) != layout.nbytes:
            raise ValueError(f"{label}: stored strides {layout.stride} are not dense")

        def scatter() -> None:
            for req in reqs:
                _copy_into(req, stored, planner)

        item = _native.ItemRead(*where, [layout.header, dst, trailer])
        batch.add(item, layout.nbytes, scatter)

    @staticmethod
    def _direct_target(
        reqs: list[ReadItem], layout: _framing.TensorLayout, planner: LoadPlanner
    ) -> torch.Tensor | None:
        """The destination tensor when the stored bytes can land in it as
        they are: one request for the whole chunk, same dtype and shape,
        both in row-major order, in CPU memory."""
        if len(reqs) != 1 or not layout.row_major:
            return None
        req = reqs[0]
        if any(req.storage_offsets) or tuple(req.lengths) != layout.shape:
            return None
        target = planner.resolve_tensor(req).detach()
        if (
            target.device.type != "cpu"
            or target.dtype != layout.torch_dtype
            or tuple(target.shape) != layout.shape
            or not target.is_contiguous()
            or type(target) is not torch.Tensor
        ):
            return None
        return target

    @staticmethod
    def _decode(reqs: list[ReadItem], blob: bytearray, planner: LoadPlanner) -> None:
        """Hand verified logical bytes (a blob or a full torch.save) over."""
        if reqs[0].type == LoadItemType.BYTE_IO:
            for req in reqs:
                planner.load_bytes(req, io.BytesIO(blob))
            return
        tensor = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        for req in reqs:
            _copy_into(req, tensor, planner)

    def _decode_foreign(
        self, info: _StorageInfo, reqs: list[ReadItem], raw: bytearray, planner: LoadPlanner
    ) -> None:
        stream: IO[bytes] = io.BytesIO(raw)
        registry = self.extension_registry
        for ext in registry.from_descriptor_list(info.transform_descriptors or ()):
            if isinstance(ext, StreamTransformExtension):
                stream = cast(IO[bytes], ext.transform_from(stream))
        if reqs[0].type == LoadItemType.BYTE_IO:
            data = stream.read()
            for req in reqs:
                planner.load_bytes(req, io.BytesIO(data))
            return
        seekable = stream if stream.seekable() else io.BytesIO(stream.read())
        tensor = torch.load(seekable, map_location="cpu", weights_only=True)
        for req in reqs:
            _copy_into(req, tensor, planner)
