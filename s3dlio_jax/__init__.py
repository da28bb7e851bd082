"""JAX / Orbax checkpoints on every s3dlio backend.

    import orbax.checkpoint as ocp
    import s3dlio_jax

    mngr = ocp.CheckpointManager(
        s3dlio_jax.path("s3://bucket/run"),
        options=s3dlio_jax.manager_options(max_to_keep=3),
        handler_registry=s3dlio_jax.handler_registry(),
    )
    mngr.save(step, args=s3dlio_jax.S3DlioSave(state, compression_level=1))
    mngr.wait_until_finished()
    state = mngr.restore(mngr.latest_step(), args=s3dlio_jax.S3DlioRestore(abstract_state))

Every byte goes through the Rust core in ``s3dlio._native``. No scheme is
registered with etils process-wide: only the path objects made here use
s3dlio.
"""

from __future__ import annotations

from typing import Any

from s3dlio._extras import require

require("jax", "jax")
require("orbax.checkpoint", "jax")

import orbax.checkpoint as ocp  # noqa: E402
from orbax.checkpoint import checkpoint_args  # noqa: E402
from orbax.checkpoint._src.futures import future as orbax_future  # noqa: E402
from orbax.checkpoint._src.handlers import handler_registration  # noqa: E402

from s3dlio_jax._args import S3DlioRestore, S3DlioSave  # noqa: E402
from s3dlio_jax._handler import S3DlioCheckpointHandler  # noqa: E402
from s3dlio_jax._path import S3DlioPath, path  # noqa: E402

__all__ = [
    "S3DlioCheckpointHandler",
    "S3DlioPath",
    "S3DlioRestore",
    "S3DlioSave",
    "handler_registry",
    "manager_options",
    "path",
]

# Orbax's array args write through tensorstore, which does not know
# s3dlio's schemes (on s3:// it writes a local directory named "s3:").
_TENSORSTORE_ARGS = tuple(
    getattr(ocp.args, name)
    for name in (
        "StandardSave",
        "StandardRestore",
        "PyTreeSave",
        "PyTreeRestore",
        "ArraySave",
        "ArrayRestore",
    )
    if hasattr(ocp.args, name)
)


def manager_options(**fields: Any) -> ocp.CheckpointManagerOptions:
    """``ocp.CheckpointManagerOptions(**fields)`` set up for s3dlio paths:
    a step is committed by one small object written last
    (``AtomicityMode.COMMIT_FILE``; Orbax's default renames every step,
    which on an object store copies it whole), uncommitted steps left by a
    crash are removed when a manager starts, and old steps are deleted in
    the background. Any field may be overridden."""
    commit_file = ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.COMMIT_FILE)
    fields.setdefault("atomicity_options", commit_file)
    fields.setdefault("cleanup_tmp_directories", True)
    fields.setdefault("enable_background_delete", True)
    return ocp.CheckpointManagerOptions(**fields)


class _TensorstoreRefused(ocp.AsyncCheckpointHandler):
    """Registered for Orbax's tensorstore-based args: says that they
    cannot write to (or read from) s3dlio paths, and what to use."""

    def __init__(self, args_name: str) -> None:
        self._args_name = args_name

    def _refuse(self) -> TypeError:
        ours = "S3DlioSave" if "Save" in self._args_name else "S3DlioRestore"
        return TypeError(
            f"ocp.args.{self._args_name} cannot be used with s3dlio_jax paths: Orbax "
            "writes arrays through tensorstore, which does not know s3dlio's schemes "
            f"(on s3:// it writes a local directory named 's3:'). Use s3dlio_jax.{ours}"
        )

    async def async_save(self, directory: Any, *args: Any, **kwargs: Any) -> list[Any]:
        # Raised from the commit future (so from wait_until_finished):
        # Orbax has already started creating the step directory, and an
        # exception here would leave its threads waiting for signals.
        error = self._refuse()

        async def fail() -> None:
            raise error

        return [orbax_future.CommitFutureAwaitingContractedSignals(fail(), name="refused")]

    def save(self, directory: Any, *args: Any, **kwargs: Any) -> None:
        raise self._refuse()

    def restore(self, directory: Any, *args: Any, **kwargs: Any) -> Any:
        raise self._refuse()

    def metadata(self, directory: Any) -> Any:
        raise self._refuse()

    def close(self) -> None:
        pass


def handler_registry(**items: Any) -> handler_registration.DefaultCheckpointHandlerRegistry:
    """A registry for ``ocp.CheckpointManager(handler_registry=...)``:
    `S3DlioSave` / `S3DlioRestore` for any item name, plus Orbax's own
    args that write through the path object (``JsonSave`` ...). Extra
    ``name=handler`` pairs register other handlers by item name.

    Orbax's ``StandardSave`` / ``PyTreeSave`` (and their restores) are
    registered to fail with an error naming `S3DlioSave`: through a
    manager on an s3dlio path they would write through tensorstore."""
    registry = handler_registration.DefaultCheckpointHandlerRegistry()
    handler = S3DlioCheckpointHandler()
    registry.add(None, S3DlioSave, handler)
    registry.add(None, S3DlioRestore, handler)
    for refused in _TENSORSTORE_ARGS:
        registry.add(None, refused, _TensorstoreRefused(refused.__name__))
    for name, other in items.items():
        save_cls, restore_cls = checkpoint_args.get_registered_args_cls(other)
        registry.add(name, save_cls, other)
        registry.add(name, restore_cls, other)
    return registry
