"""Type stubs for the Rust extension module ``s3dlio._native``."""

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numpy.typing import DTypeLike
from typing_extensions import Buffer

__version__: str

StorageOptions = Mapping[str, str]

class IntegrityError(OSError):
    """Stored bytes do not match their CRC32C or cannot be decoded."""

def put_bytes(
    uri: str,
    data: Buffer,
    compression_level: int | None = None,
    storage_options: StorageOptions | None = None,
    *,
    dtype: DTypeLike = None,
    compression_threads: int | None = None,
    fsync: bool = False,
) -> dict[str, Any]: ...
def get_bytes(uri: str, storage_options: StorageOptions | None = None) -> bytes: ...
def get_range(
    uri: str, offset: int, length: int, storage_options: StorageOptions | None = None
) -> bytes: ...
def read_into(
    uri: str, offset: int, out: Buffer, storage_options: StorageOptions | None = None
) -> int: ...
def stat(uri: str, storage_options: StorageOptions | None = None) -> dict[str, Any]: ...
def list(uri: str, storage_options: StorageOptions | None = None) -> list[str]: ...  # noqa: A001
def delete(uri: str, storage_options: StorageOptions | None = None) -> None: ...
def upload(
    path: str,
    uri: str,
    compression_level: int | None = None,
    storage_options: StorageOptions | None = None,
    *,
    dtype: DTypeLike = None,
    compression_threads: int | None = None,
    fsync: bool = False,
) -> dict[str, Any]: ...
def download(uri: str, path: str, storage_options: StorageOptions | None = None) -> int: ...
def open_writer(
    uri: str,
    compression_level: int | None = None,
    storage_options: StorageOptions | None = None,
    *,
    dtype: DTypeLike = None,
    compression_threads: int | None = None,
    fsync: bool = False,
) -> ObjectStreamWriter: ...
def cli_main(argv: Sequence[str]) -> int: ...

class ObjectStreamWriter:
    def write(self, data: Buffer) -> int: ...
    def close(self) -> dict[str, Any]: ...
    def abort(self) -> None: ...
    def __enter__(self) -> ObjectStreamWriter: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> bool: ...

class CheckpointInfo:
    step: int
    epoch: int
    framework: str
    world_size: int
    generation: int
    logical_size: int
    stored_size: int
    ratio: float
    created: float
    user_meta: Any

class PyCheckpointStore:
    def __init__(
        self,
        uri: str,
        strategy: Literal["flat", "hashed"] = "flat",
        multipart_threshold: int | None = None,
        compression_level: int | None = None,
        *,
        part_size: int | None = None,
        fsync: bool = True,
        storage_options: StorageOptions | None = None,
        byte_grouping: bool | None = None,
        compression_threads: int | None = None,
    ) -> None: ...
    @property
    def uri(self) -> str: ...
    def save(
        self,
        step: int,
        epoch: int,
        framework: str,
        data: Buffer,
        user_meta: Any = None,
        *,
        overwrite: bool = False,
        dtype: DTypeLike = None,
    ) -> CheckpointInfo: ...
    def load_latest(self) -> bytes | None: ...
    def load(self, step: int, rank: int | None = None) -> bytes: ...
    def latest_step(self) -> int | None: ...
    def list_checkpoints(self) -> list[CheckpointInfo]: ...
    def delete_checkpoint(self, step: int) -> None: ...
    def writer(
        self, world_size: int, rank: int, *, overwrite: bool = False
    ) -> CheckpointWriter: ...
    def reader(self) -> CheckpointReader: ...

class CheckpointWriter:
    @property
    def rank(self) -> int: ...
    @property
    def world_size(self) -> int: ...
    def save_distributed_shard(
        self, step: int, epoch: int, framework: str, data: Buffer, *, dtype: DTypeLike = None
    ) -> dict[str, Any]: ...
    def get_distributed_shard_stream(
        self, step: int, epoch: int, framework: str, *, dtype: DTypeLike = None
    ) -> ShardStream: ...
    def finalize_distributed_checkpoint(
        self,
        step: int,
        epoch: int,
        framework: str,
        shard_metas: Sequence[Mapping[str, Any]] | None = None,
        user_meta: Any = None,
        timeout: float = 0.0,
    ) -> CheckpointInfo: ...

class ShardStream:
    def write_chunk(self, data: Buffer) -> None: ...
    def finalize(self) -> dict[str, Any]: ...
    def abort(self) -> None: ...
    def __enter__(self) -> ShardStream: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> bool: ...

class CheckpointReader:
    def load_latest_manifest(self) -> dict[str, Any] | None: ...
    def manifest(self, step: int) -> dict[str, Any]: ...
    def read_shard(self, step: int, rank: int) -> bytes: ...
    def read_shard_into(self, step: int, rank: int, out: Buffer) -> int: ...
    def open_shard(self, step: int, rank: int) -> ShardFile: ...
    def verify(self, step: int) -> list[dict[str, Any]]: ...

class ShardFile:
    def read(self, size: int = -1) -> bytes: ...
    def readinto(self, buf: Buffer) -> int: ...
    def seek(self, offset: int, whence: int = 0) -> int: ...
    def tell(self) -> int: ...
    def readable(self) -> bool: ...
    def seekable(self) -> bool: ...
    def writable(self) -> bool: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def size_bytes(self) -> int: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> ShardFile: ...
    def __exit__(
        self,
        _exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> bool: ...

class PyValidatedCheckpointReader:
    def __init__(self, uri: str, storage_options: StorageOptions | None = None) -> None: ...
    def latest_step(self) -> int | None: ...
    def manifest(self, step: int) -> dict[str, Any]: ...
    def read_shard_array(self, step: int, rank: int, dtype: npt.DTypeLike = None) -> np.ndarray: ...
    def read_shard(self, step: int, rank: int) -> bytes: ...
    def verify(self, step: int) -> list[dict[str, Any]]: ...

class PackedItem:
    """Where `PackWriter.write_item` placed one item: the stored byte range
    (`offset`, `length`), the logical `size`, the CRC32C of the logical
    bytes (None when checksums are off) and, for a byte-grouped item,
    `grouping` = `(start, length, width, frame)` (else None), which
    `read_items` needs back."""

    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def crc32c(self) -> int | None: ...
    @property
    def grouping(self) -> tuple[int, int, int, int] | None: ...
    @property
    def frames(self) -> list[tuple[int, int]]:
        """A byte-grouped item's data frames in order, `(stored length,
        CRC32C of the logical bytes)`: each reads alone as a grouped item
        `(0, its logical length, width, frame)`; empty for other items."""
        ...

class PackWriter:
    """Many items streamed into one object (one zstd frame per item when
    compressing, or byte-grouped frames for the segment `byte_group`
    names); `write_item` returns where the item landed (`PackedItem`)."""

    def __init__(
        self,
        uri: str,
        *,
        compression_level: int | None = None,
        zstd_workers: int = 0,
        checksum: bool = True,
        part_size: int | None = None,
        fsync: bool = False,
        storage_options: StorageOptions | None = None,
    ) -> None: ...
    @property
    def uri(self) -> str: ...
    def write_item(
        self, segments: list[Buffer], byte_group: tuple[int, int] | None = None
    ) -> PackedItem: ...
    @property
    def in_place(self) -> bool: ...
    def write_items(self, items: list[list[Buffer]]) -> list[PackedItem]: ...
    def close(self) -> int: ...
    def abort(self) -> None: ...
    def __enter__(self) -> PackWriter: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> bool: ...

class ItemRead:
    """One item `read_items` fetches: `name` (the packed object, relative to
    `base_uri`), the stored byte range (`offset`, `length`), `encoding`
    (False: stored as is, True: one zstd frame, or a byte-grouped item's
    `PackedItem.grouping`), the `crc32c` of the logical bytes to check
    (None: unchecked), a `label` naming the item in errors, and `targets`
    covering the logical bytes in order: writable buffers (filled) and
    ints (bytes skipped)."""

    def __init__(
        self,
        name: str,
        offset: int,
        length: int,
        encoding: bool | tuple[int, int, int, int],
        crc32c: int | None,
        label: str,
        targets: list[Buffer | int],
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def encoding(self) -> bool | tuple[int, int, int, int]: ...
    @property
    def crc32c(self) -> int | None: ...
    @property
    def label(self) -> str: ...
    @property
    def targets(self) -> list[Buffer | int]: ...

def read_items(
    base_uri: str,
    items: list[ItemRead],
    thread_count: int = 8,
    part_size: int | None = None,
    storage_options: StorageOptions | None = None,
) -> None: ...
def block_crc32c(data: Buffer, block: int) -> list[int]:
    """CRC32C of each `block`-byte run of `data` (the last may be shorter):
    per-block checks for reading part of a stored-as-is item."""

def put_object(
    uri: str,
    data: Buffer,
    *,
    exclusive: bool = False,
    fsync: bool = False,
    storage_options: StorageOptions | None = None,
) -> bool: ...
def resolve_uri(uri: str, storage_options: StorageOptions | None = None) -> str: ...
def single_put_limit(
    uri: str, part_size: int | None = None, storage_options: StorageOptions | None = None
) -> int | None:
    """Objects under `uri` smaller than this are written with one request;
    None where writes are not requests (local stores)."""

def list_dir(
    uri: str, storage_options: StorageOptions | None = None
) -> tuple[list[str], list[tuple[str, int, float | None]]]:
    """One level under the prefix `uri` (one delimiter listing on S3 and
    Azure): the sub-prefix URIs (ending in `/`) and `(uri, size,
    last_modified)` of the objects directly under it."""

def head_object(
    uri: str, storage_options: StorageOptions | None = None
) -> tuple[int, float | None]:
    """`(size, last_modified)` of one object (one HEAD request)."""

def get_object(uri: str, storage_options: StorageOptions | None = None) -> bytes:
    """The stored bytes of one object, as they are (one GET request)."""

def check_encoding(compression_level: int | None, byte_grouping: bool | None) -> None:
    """The core's rule for encoding settings: ValueError unless the level is
    1-22 (or None) and byte_grouping=True comes with a level."""

def byte_group_width(dtype: Any) -> int | None:
    """The core's byte-grouping rule: the element width (2, 4 or 8) the
    filter uses for data of `dtype` (numpy, ml_dtypes or torch dtype, or a
    name), None where it does not apply; ValueError for what is not a dtype."""

# TensorFlow filesystem plugin (this library also exports TF_InitPlugin; see s3dlio_tf).
TF_COMPRESSION_ENV: str

def tf_configure(compression_level: int | None = None) -> None:
    """Compression level (1-22, or None) of the files the TF plugin writes."""

def tf_abi_layout() -> list[tuple[str, int]]:
    """Sizes and field offsets of the plugin's mirrored TF C tables."""
