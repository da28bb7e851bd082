"""s3dlio: fast, verified checkpoints on local disk, O_DIRECT, S3 and Azure Blob.

Everything here delegates to the Rust core in ``s3dlio._native``; the GIL is
released around all I/O.
"""

from s3dlio._native import (
    CheckpointInfo,
    CheckpointReader,
    CheckpointWriter,
    IntegrityError,
    ObjectStreamWriter,
    PyCheckpointStore,
    PyValidatedCheckpointReader,
    ShardFile,
    ShardStream,
    __version__,
    delete,
    download,
    get_bytes,
    get_range,
    list,  # noqa: A004 - the name users expect, like `aws s3 ls`
    open_writer,
    put_bytes,
    read_into,
    stat,
    upload,
)
from s3dlio._numpy import load_numpy_array, save_numpy_array

__all__ = [
    "CheckpointInfo",
    "CheckpointReader",
    "CheckpointWriter",
    "IntegrityError",
    "ObjectStreamWriter",
    "PyCheckpointStore",
    "PyValidatedCheckpointReader",
    "ShardFile",
    "ShardStream",
    "__version__",
    "delete",
    "download",
    "get_bytes",
    "get_range",
    "list",
    "load_numpy_array",
    "open_writer",
    "put_bytes",
    "read_into",
    "save_numpy_array",
    "stat",
    "upload",
]
