"""Adapters' framework imports, with an error that says which extra installs them.

``import s3dlio`` needs only numpy; each adapter package (``s3dlio_torch``,
``s3dlio_jax``, ``s3dlio_tf``) needs its framework, installed with the
matching extra: ``pip install 's3dlio[torch]'``. An adapter calls
:func:`require` first thing in its ``__init__`` so that a missing framework
is one clear ``ImportError`` instead of a bare ``No module named ...`` from
deep inside the adapter.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` naming ``s3dlio[extra]``.

    Only ``module`` itself (or a package above it) being absent is
    translated: an ``ImportError`` raised while an installed framework
    imports its own parts is a broken install, not a missing extra, and
    propagates unchanged so its message is not lost.
    """
    parts = module.split(".")
    wanted = {".".join(parts[: i + 1]) for i in range(len(parts))}
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name not in wanted:
            raise
        raise ImportError(
            f"{module} is not installed; the s3dlio adapter needs it: "
            f"pip install 's3dlio[{extra}]'",
            name=module,
        ) from err
