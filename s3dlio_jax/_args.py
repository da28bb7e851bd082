"""`S3DlioSave` / `S3DlioRestore`: the ``ocp.args`` of the s3dlio handler
(registered with it in `s3dlio_jax._handler`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from orbax.checkpoint import checkpoint_args

from s3dlio._checks import check_level, check_positive

# Host memory a save may hold for device->host copies by default. Arrays on
# the CPU backend are not copied at all (see docs/design/jax.md).
DEFAULT_MAX_HOST_BYTES = 256 << 20


@dataclasses.dataclass
class S3DlioSave(checkpoint_args.CheckpointArgs):
    """Save a pytree of ``jax.Array``, numpy arrays, Python scalars and
    strings through s3dlio.

    Attributes:
        item: the pytree.
        compression_level: zstd level 1-22, or None to store bytes as they are.
        byte_grouping: float leaves are byte-grouped before zstd (much
            smaller for weights) unless False; True insists on a level.
        max_host_bytes: host memory held at once for device->host copies;
            ``save()`` returns once everything is copied or written, so a
            tree larger than this blocks until the rest is written.
        chunk_bytes: largest stored piece of an array (rows of a shard); a
            restore under another sharding reads whole pieces.
        thread_count: files written in parallel per process (default: the
            number of CPUs, at most 8).
    """

    item: Any
    compression_level: int | None = None
    byte_grouping: bool | None = None
    max_host_bytes: int = DEFAULT_MAX_HOST_BYTES
    chunk_bytes: int = 64 << 20
    thread_count: int | None = None

    def __post_init__(self) -> None:
        # Checked here, before the manager starts a step: a failure inside
        # the handler would leave Orbax's directory-creation threads waiting.
        check_level(self.compression_level)
        if self.byte_grouping is not None and not isinstance(self.byte_grouping, bool):
            raise ValueError(
                f"byte_grouping must be True, False or None, got {self.byte_grouping!r}"
            )
        if self.byte_grouping and self.compression_level is None:
            raise ValueError("byte_grouping=True needs compression: pass compression_level (1-22)")
        for name in ("max_host_bytes", "chunk_bytes", "thread_count"):
            value = getattr(self, name)
            if value is None and name != "thread_count":
                raise ValueError(f"{name} must be a positive integer, got None")
            check_positive(name, value)
        for keypath, value in jax.tree_util.tree_flatten_with_path(self.item)[0]:
            if not isinstance(value, (jax.Array, np.ndarray, np.generic, bool, int, float, str)):
                raise TypeError(
                    f"{jax.tree_util.keystr(keypath)}: cannot save a {type(value).__name__}; "
                    "S3DlioSave takes jax.Array, numpy arrays, Python scalars and strings"
                )


@dataclasses.dataclass
class S3DlioRestore(checkpoint_args.CheckpointArgs):
    """Restore a pytree saved with `S3DlioSave`.

    Attributes:
        item: the abstract tree: ``jax.ShapeDtypeStruct`` leaves with a
            ``sharding`` (or concrete ``jax.Array`` leaves) for arrays
            restored onto devices, numpy arrays for host arrays, Python
            values for scalars and strings. A dtype other than the saved
            one is cast to, as Orbax does. None: the saved tree as nested
            dicts and lists of numpy arrays and Python values.
        partial: allow the checkpoint to hold leaves `item` does not name.
        thread_count: ranged reads in flight at once.
    """

    item: Any = None
    partial: bool = False
    thread_count: int = 8
