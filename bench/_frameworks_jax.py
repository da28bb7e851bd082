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
sharding; peak RSS growth of each side. Neither side fsyncs.

On s3:// (s3s-fs) and az:// (Azurite), when bench/_servers.py started them,
ours is measured beside a raw-HTTP ceiling (bench/_raw_s3.py,
bench/_raw_azure.py: the same bytes in objects of the sizes ours wrote, the
same request sizes and concurrency, no checksums, no work of its own).
Orbax has no row there: its array path (tensorstore) only knows gs://; on
s3:// it writes a local directory named ``s3:``, and it has no Azure
kvstore at all (see docs/design/jax.md).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import time
from typing import Any

import numpy as np
from _common import Bench, Row, interleaved, speed_row
from _raw_s3 import cut

# The raw ceiling's request pattern, matched to ours: writer threads, and
# read_items' part size and threads (S3DlioRestore's thread_count).
RAW_WRITERS = min(8, os.cpu_count() or 1)
RAW_READ_PART = 16 << 20
RAW_READERS = 8
# On Azure ours streams each data file as Put Blocks: the core's default
# block size and blocks in flight per file (PutOptions).
AZ_BLOCK = 8 << 20
AZ_BLOCKS_IN_FLIGHT = 4
NO_ORBAX_ROW = (
    "Orbax has no row here: its array path (tensorstore) only knows gs:// (on s3:// it "
    "writes a local directory named 's3:') and has no Azure kvstore"
)


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
            speed_row(
                "frameworks",
                f"JAX CheckpointManager: {op} {gib:.2f} GiB fp32 (file://)",
                nbytes,
                runs["ours"],
                peer,
                runs["peer"],
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
    for scheme, root, raw_client in _remotes():
        _remote(bench, state, tree, abstract, scheme, root, raw_client, repeat)


def _remotes() -> list[tuple[str, str, Any]]:
    """(scheme, checkpoint root, raw client class) of each object store the
    bench environment names."""
    out: list[tuple[str, str, Any]] = []
    if os.environ.get("AWS_ENDPOINT_URL_S3") and os.environ.get("S3DLIO_BENCH_S3_BUCKET"):
        from _raw_s3 import RawS3

        out.append(("s3", f"s3://{os.environ['S3DLIO_BENCH_S3_BUCKET']}/jax-frameworks", RawS3))
    if os.environ.get("AZURE_STORAGE_CONNECTION_STRING") and os.environ.get(
        "S3DLIO_BENCH_AZ_CONTAINER"
    ):
        from _raw_azure import RawAzure

        account = os.environ["S3DLIO_BENCH_AZ_ACCOUNT"]
        container = os.environ["S3DLIO_BENCH_AZ_CONTAINER"]
        out.append(("az", f"az://{account}/{container}/jax-frameworks", RawAzure))
    return out


def _remote(
    bench: Bench,
    state: dict[str, np.ndarray],
    tree: Any,
    abstract: Any,
    scheme: str,
    root: str,
    raw_client: Any,
    repeat: int,
) -> None:
    """Ours through CheckpointManager on an object store, and the raw-HTTP
    ceiling moving the same bytes in objects of the sizes ours wrote."""
    import jax
    import orbax.checkpoint as ocp

    import s3dlio
    import s3dlio_jax

    nbytes = sum(v.nbytes for v in state.values())
    base = s3dlio_jax.path(root)

    def manager() -> Any:
        return ocp.CheckpointManager(
            base,
            options=s3dlio_jax.manager_options(),
            handler_registry=s3dlio_jax.handler_registry(),
        )

    def save() -> None:
        mngr = manager()
        mngr.save(0, args=s3dlio_jax.S3DlioSave(tree))
        mngr.wait_until_finished()
        mngr.close()

    def load() -> Any:
        mngr = manager()
        out = jax.block_until_ready(mngr.restore(0, args=s3dlio_jax.S3DlioRestore(abstract)))
        mngr.close()
        return out

    base.rmtree(missing_ok=True)
    save()
    data = f"{root}/0/default/"
    sizes = [
        s3dlio.stat(u)["size"] for u in s3dlio.list(data) if u.rsplit("/", 1)[-1].startswith("d.")
    ]
    if sum(sizes) != nbytes:
        raise AssertionError(f"{data}: data files hold {sum(sizes)} bytes, the tree {nbytes}")
    views = [memoryview(v.reshape(-1).view(np.uint8)) for v in state.values()]
    prefix = root.split("/", 3 if scheme == "s3" else 4)[-1]

    def raw_objects(buffers: list[memoryview]) -> dict[str, list[memoryview]]:
        """`buffers`' bytes, in order, as objects of ours' sizes."""
        objects: dict[str, list[memoryview]] = {}
        pieces = iter(buffers)
        carry: memoryview | None = None
        for n, size in enumerate(sizes):
            got: list[memoryview] = []
            room = size
            while room:
                piece = carry if carry is not None else next(pieces)
                carry = None
                take = min(room, len(piece))
                got.append(piece[:take])
                if take < len(piece):
                    carry = piece[take:]
                room -= take
            objects[f"{prefix}-raw/{n:03d}"] = got
        return objects

    def raw_save() -> None:
        client = raw_client(RAW_WRITERS)
        try:
            client.put_each(raw_objects(views))
        finally:
            client.close()

    def raw_blocks_save() -> None:
        client = raw_client(len(sizes) * AZ_BLOCKS_IN_FLIGHT)
        try:
            client.put_blocks(raw_objects(views), AZ_BLOCK)
        finally:
            client.close()

    def raw_load() -> None:
        dest = [np.empty_like(v) for v in state.values()]
        client = raw_client(RAW_READERS)
        try:
            objects = raw_objects([memoryview(d.reshape(-1).view(np.uint8)) for d in dest])
            client.get_all({k: cut(v, RAW_READ_PART) for k, v in objects.items()})
        finally:
            client.close()

    def setup(key: str) -> None:
        if key == "ours":
            base.rmtree(missing_ok=True)

    saves = {"ours": save, "raw": raw_save}
    if scheme == "az":
        saves["raw_blocks"] = raw_blocks_save
    saved = interleaved(saves, repeat, setup=setup)
    loaded = interleaved({"ours": load, "raw": raw_load}, repeat)
    for k, v in state.items():
        if not np.array_equal(np.asarray(loaded["ours"].result[k]), v):
            raise AssertionError(f"JAX {scheme}://: {k} restored with different values")
    gib = nbytes / (1 << 30)
    server = "s3s-fs" if scheme == "s3" else "Azurite"
    # Ours streams each data file without knowing its size: on Azure (no
    # single-request limit, so one file per writer thread) that is Put
    # Block + Put Block List, where the raw client sends one Put Blob.
    streamed = "; ours: Put Block + Put Block List per object" if scheme == "az" else ""
    pattern = {
        "save": f"one PUT per object, {len(sizes)} objects of ours' sizes, "
        f"{RAW_WRITERS} in flight{streamed}",
        "restore": f"{RAW_READ_PART >> 20} MiB ranged GETs, {RAW_READERS} in flight",
    }
    for op, runs, what in (
        ("save until wait_until_finished", saved, "save"),
        ("restore", loaded, "restore"),
    ):
        bench.add(
            speed_row(
                "frameworks",
                f"JAX CheckpointManager: {op} {gib:.2f} GiB fp32 ({scheme}://, {server})",
                nbytes,
                runs["ours"],
                f"raw HTTP ceiling (presigned/SAS, keep-alive, no checksums; {pattern[what]})",
                runs["raw"],
                notes=f"ours: S3DlioSave/S3DlioRestore, CRC32C per piece; {NO_ORBAX_ROW}",
            )
        )
    if scheme == "az":
        # The same requests as ours: where Azurite's Put Block path is the
        # limit, this row shows it beside the Put Blob ceiling above.
        bench.add(
            speed_row(
                "frameworks",
                f"JAX CheckpointManager: save until wait_until_finished {gib:.2f} GiB fp32 "
                f"({scheme}://, {server}), the same requests",
                nbytes,
                saved["ours"],
                "raw HTTP ceiling (SAS, keep-alive, no checksums; Put Block of "
                f"{AZ_BLOCK >> 20} MiB, {AZ_BLOCKS_IN_FLIGHT} in flight per object, "
                f"{len(sizes)} objects of ours' sizes, then Put Block List each)",
                saved["raw_blocks"],
                notes=f"ours: S3DlioSave, CRC32C per piece; {NO_ORBAX_ROW}",
            )
        )
    base.rmtree(missing_ok=True)
