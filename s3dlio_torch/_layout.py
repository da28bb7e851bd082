"""Names and records of a DCP checkpoint written by s3dlio.

The layout is torch's: ``.metadata`` (or ``__<rank>.metadata`` without
collectives) plus data files ``__<rank>_<n>.<tag>.distcp`` whose names the
metadata records per item. The ``<tag>`` is new for every save, so a save
never writes over a file an existing checkpoint uses.

What s3dlio adds to each item rides on torch's own ``_StorageInfo`` as one
extra attribute (a dict of plain values), so the ``.metadata`` stays
readable by torch alone, which ignores it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import MetadataIndex

from s3dlio_torch._framing import TensorLayout

METADATA = ".metadata"
DATA_SUFFIX = ".distcp"
# torch's descriptor for one zstd frame per item (its `ZStandard` extension).
ZSTD_DESCRIPTOR = "stream.zstd/1"
# s3dlio's descriptor for byte-grouped float items. torch's stock reader
# looks the part before "/" up in its extension registry and fails with
# "Unknown extension name='<that part>'", so the name carries the way out.
GROUPED_NAME = (
    "s3dlio.byte_grouped (written by s3dlio_torch with byte grouping: load it with "
    "s3dlio_torch.S3DlioReader, or save with S3DlioWriter(byte_grouping=False) "
    "for torch's own FileSystemReader)"
)
GROUPED_DESCRIPTOR = f"{GROUPED_NAME}/1"
# The attribute s3dlio sets on `_StorageInfo`.
EXTRA = "s3dlio"

RANK_METADATA = re.compile(r"__(\d+)\.metadata")


def metadata_name(rank: int | None) -> str:
    return METADATA if rank is None else f"__{rank}{METADATA}"


def is_metadata_name(name: str) -> bool:
    return name == METADATA or RANK_METADATA.fullmatch(name) is not None


@dataclass(frozen=True)
class FilePrefix:
    """`SavePlan.storage_data`: how one rank names its data files."""

    prefix: str
    tag: str

    def file_name(self, n: int) -> str:
        return f"{self.prefix}{n}.{self.tag}{DATA_SUFFIX}"


@dataclass(frozen=True)
class ItemRecord:
    """What s3dlio knows about one stored item."""

    size: int
    crc32c: int | None
    tensor: TensorLayout | None
    # A byte-grouped item's (start, length, width, frame), as the pack
    # writer returned it: what the pack reader needs to restore it.
    grouping: tuple[int, int, int, int] | None = None

    def attach(self, info: _StorageInfo) -> _StorageInfo:
        record: dict[str, Any] = {"size": self.size, "crc32c": self.crc32c}
        if self.tensor is not None:
            record["tensor"] = self.tensor.as_record()
        if self.grouping is not None:
            record["grouping"] = self.grouping
        setattr(info, EXTRA, record)
        return info

    @staticmethod
    def of(info: _StorageInfo) -> ItemRecord | None:
        record = getattr(info, EXTRA, None)
        if not isinstance(record, dict):
            return None
        tensor = record.get("tensor")
        grouping = record.get("grouping")
        return ItemRecord(
            size=int(record["size"]),
            crc32c=record.get("crc32c"),
            tensor=TensorLayout.from_record(tensor) if tensor is not None else None,
            grouping=tuple(int(v) for v in grouping) if grouping is not None else None,  # type: ignore[arg-type]
        )


def label(index: MetadataIndex) -> str:
    """Names an item in messages: its key and, for tensor chunks, offsets."""
    if index.offset is None:
        return index.fqn
    return f"{index.fqn} chunk {list(index.offset)}"


def child(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"
