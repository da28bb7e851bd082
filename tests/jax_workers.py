"""Child processes of tests/test_jax.py: JAX fixes its CPU device count at
import (XLA_FLAGS), and multi-process runs need one process per JAX
process. Run as ``python jax_workers.py <command> <args...>``; the parent
sets XLA_FLAGS before the interpreter starts."""

from __future__ import annotations

import json
import os
import signal
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import s3dlio
import s3dlio_jax

SHAPE = (16, 8)


def expected() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "w": rng.standard_normal(SHAPE).astype(np.float32),
        "e": (rng.standard_normal(SHAPE) * 4).astype(jax.numpy.bfloat16),
        "k": rng.integers(-(2**31), 2**31 - 1, SHAPE, dtype=np.int32),
    }


def manager(uri: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        s3dlio_jax.path(uri),
        options=s3dlio_jax.manager_options(max_to_keep=5),
        handler_registry=s3dlio_jax.handler_registry(),
    )


def sharded(values: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    return {
        k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
        for k, v in values.items()
    }


def abstract(sharding: NamedSharding) -> dict[str, jax.ShapeDtypeStruct]:
    return {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in expected().items()
    }


def check(restored: dict[str, jax.Array], sharding: NamedSharding) -> None:
    """Every addressable shard bit-exact, with the asked-for sharding."""
    want = expected()
    for k, arr in restored.items():
        assert arr.sharding == sharding, (k, arr.sharding, sharding)
        for shard in arr.addressable_shards:
            got = np.asarray(shard.data)
            ref = want[k][shard.index]
            assert got.dtype == ref.dtype and np.array_equal(
                got.view(np.uint8), np.ascontiguousarray(ref).view(np.uint8)
            ), k


def mesh_save(uri: str) -> None:
    """8 devices: save sharded over a 4x2 mesh, restore over the
    transposed layout of the same mesh."""
    devices = np.array(jax.devices()).reshape(4, 2)
    mesh = Mesh(devices, ("a", "b"))
    saved = NamedSharding(mesh, P("a", "b"))
    mngr = manager(uri)
    mngr.save(0, args=s3dlio_jax.S3DlioSave(sharded(expected(), saved), compression_level=1))
    mngr.wait_until_finished()
    other = NamedSharding(mesh, P("b", "a"))
    check(mngr.restore(0, args=s3dlio_jax.S3DlioRestore(abstract(other))), other)
    mngr.close()


def mesh_restore(uri: str) -> None:
    """Another device count (the parent sets it): restore row-sharded."""
    mesh = Mesh(np.array(jax.devices()), ("x",))
    sharding = NamedSharding(mesh, P(None, "x"))
    mngr = manager(uri)
    check(mngr.restore(0, args=s3dlio_jax.S3DlioRestore(abstract(sharding))), sharding)
    mngr.close()


def _bytes_read() -> int:
    """Bytes this process has read through read system calls so far (all
    threads, the core's preadv included)."""
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["rchar"])


def reshard_bytes(uri: str) -> None:
    """8 devices, file://: an array stored as is in 2 row pieces (saved
    from 2 devices), restored row-sharded over 8 devices and over a 4x2
    grid. Prints the bytes each restore read; then a flipped byte in a
    piece read in part is an IntegrityError naming its CRC block."""
    devices = jax.devices()
    value = np.random.default_rng(11).standard_normal((2048, 1024)).astype(np.float32)
    saved = NamedSharding(Mesh(np.array(devices[:2]), ("x",)), P("x"))
    mngr = manager(uri)
    mngr.save(0, args=s3dlio_jax.S3DlioSave(sharded({"w": value}, saved)))
    mngr.wait_until_finished()
    rows = NamedSharding(Mesh(np.array(devices), ("x",)), P("x"))
    grid = NamedSharding(Mesh(np.array(devices).reshape(4, 2), ("a", "b")), P("a", "b"))
    read = {}
    for name, sharding in (("rows", rows), ("grid", grid)):
        target = {"w": jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)}
        before = _bytes_read()
        got = mngr.restore(0, args=s3dlio_jax.S3DlioRestore(target))["w"]
        read[name] = _bytes_read() - before
        assert got.sharding == sharding
        for shard in got.addressable_shards:
            assert np.array_equal(np.asarray(shard.data), value[shard.index]), name
    print(json.dumps({"read": read, "nbytes": value.nbytes}), flush=True)

    item = uri.removeprefix("file://") + "/0/default"
    with open(f"{item}/s3dlio_index.json") as f:
        (leaf,) = json.load(f)["leaves"]
    piece = leaf["chunks"][0]
    assert len(piece["block_crc32c"]) > 1, piece.keys()
    with open(f"{item}/{piece['file']}", "r+b") as f:
        f.seek(piece["offset"] + piece["block"] + 5)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    target = {"w": jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=rows)}
    try:
        mngr.restore(0, args=s3dlio_jax.S3DlioRestore(target))
    except s3dlio.IntegrityError as e:
        assert piece["file"] in str(e) and "['w']" in str(e) and "block 1" in str(e), str(e)
    else:
        raise AssertionError("a flipped byte in a block that was read went unnoticed")
    mngr.close()


def distributed(uri: str, coordinator: str, process: int) -> None:
    """One of two processes (2 CPU devices each) saving one checkpoint of
    arrays sharded over all 4 devices, then restoring its own shards
    under another sharding, then onto process 1's devices alone."""
    jax.distributed.initialize(coordinator, num_processes=2, process_id=process)
    assert jax.process_count() == 2 and len(jax.devices()) == 4
    mesh = Mesh(np.array(jax.devices()), ("x",))
    saved = NamedSharding(mesh, P("x"))
    mngr = manager(uri)
    mngr.save(3, args=s3dlio_jax.S3DlioSave(sharded(expected(), saved)))
    mngr.wait_until_finished()
    assert mngr.all_steps() == [3], mngr.all_steps()
    other = NamedSharding(mesh, P(None, "x"))
    check(mngr.restore(3, args=s3dlio_jax.S3DlioRestore(abstract(other))), other)
    # Onto process 1's devices only: process 0 holds no shard of any array
    # (it failed in JAX's make_array_from_callback, and process 1 waited at
    # Orbax's barrier until the coordination timeout).
    ones = [d for d in jax.devices() if d.process_index == 1]
    only = NamedSharding(Mesh(np.array(ones), ("x",)), P("x"))
    check(mngr.restore(3, args=s3dlio_jax.S3DlioRestore(abstract(only))), only)
    _partial_compressed(mngr, mesh)
    mngr.close()
    jax.distributed.shutdown()


def _partial_compressed(mngr: ocp.CheckpointManager, mesh: Mesh) -> None:
    """A 16 MiB array saved compressed as one piece (replicated: process
    0 writes it, 4 byte-grouped frames), restored row-sharded over both
    processes: each reads only the frames holding its rows, about half of
    the piece, and gets them bit-exact."""
    value = np.random.default_rng(5).standard_normal((8192, 512)).astype(np.float32)
    whole = NamedSharding(mesh, P())
    mngr.save(4, args=s3dlio_jax.S3DlioSave(sharded({"big": value}, whole), compression_level=1))
    mngr.wait_until_finished()
    requested = []
    read_items = s3dlio._native.read_items

    def counting(base: str, items: list, *args: object, **kwargs: object) -> object:
        requested.extend(item.length for item in items)
        return read_items(base, items, *args, **kwargs)

    s3dlio._native.read_items = counting
    try:
        rows = NamedSharding(mesh, P("x"))
        target = {"big": jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=rows)}
        got = mngr.restore(4, args=s3dlio_jax.S3DlioRestore(target))["big"]
    finally:
        s3dlio._native.read_items = read_items
    for shard in got.addressable_shards:
        assert np.array_equal(np.asarray(shard.data), value[shard.index])
    stored = s3dlio_jax._restore.read_index(mngr.directory / "4" / "default")
    (leaf,) = [x for x in stored["leaves"] if x["shape"] == list(value.shape)]
    (piece,) = leaf["chunks"]
    assert len(piece["block_stored"]) == 4, piece.keys()
    assert 0 < sum(requested) <= 0.6 * piece["length"], (requested, piece["length"])


def killed(uri: str) -> None:
    """Save step 0, then die by SIGKILL in step 1 after its data is
    written and before its commit (in finalize, which runs between)."""
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("x",)), P())
    mngr = manager(uri)
    mngr.save(0, args=s3dlio_jax.S3DlioSave(sharded(expected(), sharding)))
    mngr.wait_until_finished()

    def die(self: object, directory: object) -> None:
        print(json.dumps({"dying_in": str(directory)}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    s3dlio_jax.S3DlioCheckpointHandler.finalize = die  # type: ignore[method-assign]
    mngr.save(1, args=s3dlio_jax.S3DlioSave(sharded(expected(), sharding)))
    mngr.wait_until_finished()
    raise AssertionError("the saver should have been killed in finalize")


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "distributed":
        distributed(rest[0], rest[1], int(rest[2]))
    else:
        commands = {
            "mesh_save": mesh_save,
            "mesh_restore": mesh_restore,
            "killed": killed,
            "reshard_bytes": reshard_bytes,
        }
        commands[command](*rest)
    print("ok", flush=True)
