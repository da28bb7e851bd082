"""JAX rows of bench_frameworks.py: the real adapter path against Orbax's
own, both through ``ocp.CheckpointManager`` on the same pytree of CPU
jax.Arrays, on file:// (the work disk).

- ours: ``CheckpointManager(s3dlio_jax.path(dir), options=
  s3dlio_jax.manager_options(), handler_registry=s3dlio_jax.handler_registry())``
  with ``S3DlioSave`` / ``S3DlioRestore``;
- peer: ``CheckpointManager(dir)`` with ``ocp.args.StandardSave`` /
  ``StandardRestore`` (tensorstore, OCDBT; Orbax's defaults).

Rows: save until ``wait_until_finished``; the time blocked in ``save()``
(the training stall); restore into jax.Arrays of the abstract tree's
sharding; peak RSS growth of each side. Neither side fsyncs. Orbax has no
s3:// or az:// row: its array path only knows gs:// (on s3:// it writes a
local directory named ``s3:``, see docs/design/jax.md).
"""

from __future__ import annotations

import pathlib
import shutil
import time
from typing import Any

import numpy as np
from _common import Bench, Row, interleaved, mb_per_s


def run(bench: Bench, state: dict[str, np.ndarray], scratch: pathlib.Path, repeat: int) -> None:
    import jax
    import orbax.checkpoint as ocp

    import s3dlio_jax

    tree = {k: jax.device_put(v) for k, v in state.items()}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    nbytes = sum(v.nbytes for v in state.values())
    dirs = {"ours": scratch / "ours-orbax", "peer": scratch / "orbax"}
    blocked: dict[str, list[float]] = {"ours": [], "peer": []}

    def ours_manager() -> Any:
        return ocp.CheckpointManager(
            s3dlio_jax.path(str(dirs["ours"])),
            options=s3dlio_jax.manager_options(),
            handler_registry=s3dlio_jax.handler_registry(),
        )

    def peer_manager() -> Any:
        return ocp.CheckpointManager(dirs["peer"])

    def saver(key: str, make: Any, args: Any) -> Any:
        def save() -> None:
            mngr = make()
            t = time.perf_counter()
            mngr.save(0, args=args)
            blocked[key].append(time.perf_counter() - t)
            mngr.wait_until_finished()
            mngr.close()

        return save

    def loader(make: Any, args: Any) -> Any:
        def load() -> Any:
            mngr = make()
            out = jax.block_until_ready(mngr.restore(0, args=args))
            mngr.close()
            return out

        return load

    def setup(key: str) -> None:
        shutil.rmtree(dirs[key], ignore_errors=True)

    saved = interleaved(
        {
            "ours": saver("ours", ours_manager, s3dlio_jax.S3DlioSave(tree)),
            "peer": saver("peer", peer_manager, ocp.args.StandardSave(tree)),
        },
        repeat,
        setup=setup,
    )
    loaded = interleaved(
        {
            "ours": loader(ours_manager, s3dlio_jax.S3DlioRestore(abstract)),
            "peer": loader(peer_manager, ocp.args.StandardRestore(abstract)),
        },
        repeat,
    )
    peer = f"Orbax CheckpointManager + StandardSave {ocp.__version__} (jax {jax.__version__})"
    gib = nbytes / (1 << 30)
    for op, runs in [("save until wait_until_finished", saved), ("restore", loaded)]:
        bench.add(
            Row(
                "frameworks",
                f"JAX CheckpointManager: {op} {gib:.2f} GiB fp32 (file://)",
                mb_per_s(nbytes, runs["ours"].seconds),
                peer,
                mb_per_s(nbytes, runs["peer"].seconds),
                "MB/s",
                ours_rss_mib=runs["ours"].rss_mib,
                peer_rss_mib=runs["peer"].rss_mib,
                notes="ours: S3DlioSave/S3DlioRestore; no fsync on either side; best of runs",
            )
        )
    bench.add(
        Row(
            "frameworks",
            f"JAX CheckpointManager: time blocked in save() {gib:.2f} GiB (file://)",
            min(blocked["ours"]),
            peer,
            min(blocked["peer"]),
            "s",
            higher_is_better=False,
            notes="the training stall: save() until it returns (ours pins CPU buffers)",
        )
    )
    for side, result in loaded.items():
        for k, v in state.items():
            if not np.array_equal(np.asarray(result.result[k]), v):
                raise AssertionError(f"JAX {side}: {k} restored with different values")
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
