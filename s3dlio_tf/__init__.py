"""TensorFlow support: ``import s3dlio_tf`` lets ``tf.train.Checkpoint``,
SavedModel, TFRecord and ``tf.io.gfile`` use ``s3://``, ``az://`` and
``direct://`` paths.

The native module ``s3dlio._native`` is also a TensorFlow modular filesystem
plugin (it exports ``TF_InitPlugin``); importing this package hands its file
to ``tf.experimental.register_filesystem_plugin``, once per process.
"""

from __future__ import annotations

import re
import threading

from s3dlio import _native
from s3dlio._extras import require

require("tensorflow", "tf")

__all__ = ["SCHEMES", "SchemeTakenError", "configure", "register", "registered"]

#: The URI schemes the plugin serves.
SCHEMES = ("s3", "az", "direct")

_lock = threading.Lock()
_registered = False


class SchemeTakenError(RuntimeError):
    """Another TensorFlow filesystem (tensorflow-io, say) already serves a
    scheme of ours; the schemes still free were registered."""


def configure(compression_level: int | None = None) -> None:
    """Compress the files TensorFlow writes from now on with zstd at
    ``compression_level`` (1-22) in s3dlio's seekable format, or store them
    as they are (``None``, the default). Files of either kind read back
    transparently. The environment variable ``S3DLIO_TF_COMPRESSION_LEVEL``
    sets the same at registration."""
    _native.tf_configure(compression_level)


def registered() -> bool:
    """Whether this process registered the plugin with TensorFlow."""
    return _registered


def register() -> None:
    """Register the plugin with TensorFlow; later calls do nothing.

    Raises :class:`SchemeTakenError` naming the scheme when another
    filesystem already holds one (the free schemes are registered anyway).
    """
    global _registered
    with _lock:
        if _registered:
            return
        import tensorflow as tf

        try:
            tf.experimental.register_filesystem_plugin(_native.__file__)
        except tf.errors.AlreadyExistsError as e:
            _registered = True
            taken = re.findall(r"File system for (\w+) already registered", str(e))
            names = ", ".join(f"{s}://" for s in taken) or "one of s3://, az://, direct://"
            raise SchemeTakenError(
                f"s3dlio_tf: {names} is already served by another TensorFlow filesystem "
                f"(tensorflow-io registers s3://): import s3dlio_tf before that package, "
                f"or do not import it in this process; the other schemes of "
                f"{', '.join(SCHEMES)} were registered. TensorFlow said: {e}"
            ) from e
        _registered = True


register()
