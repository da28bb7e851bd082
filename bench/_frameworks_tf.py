"""TensorFlow rows of bench_frameworks.py:

- `tf.train.Checkpoint.write` / `.read` through the s3dlio plugin on
  direct:// (durable: O_DIRECT data, fsync at close) against TensorFlow's
  own local write on the same disk, as it is (page cache) and made as
  durable as ours (every file and directory fsynced after the write, as a
  user who needs the checkpoint to survive a crash must). Both sides are
  TensorFlow's checkpoint code; only the filesystem differs.
- The same on s3:// (s3s-fs) and az:// (Azurite) against the raw-HTTP
  ceiling (bench/_raw_s3.py, bench/_raw_azure.py: the same bytes in 8 MiB
  requests from 8 threads, no checksums), and the requests and server-side
  copies one save costs, counted by a relay in front of the server
  (tests/request_counter.py) on one extra, untimed save.
- Peak RSS growth while one large variable (4 GiB; 512 MiB with --quick)
  is saved through the plugin on direct://, against TF's own local save, each
  in a fresh process.

Restores are checked bit-exact against the saved values."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import numpy as np
from _common import Bench, Row, interleaved, speed_row


def tensorflow(bench: Bench, state: dict[str, np.ndarray], repeat: int, scratch: Any) -> None:
    import tensorflow as tf

    import s3dlio_tf

    assert s3dlio_tf.registered()
    names = list(state)
    variables = [tf.Variable(state[k]) for k in names]
    ckpt = tf.train.Checkpoint(weights=variables)
    root = pathlib.Path(scratch)
    dirs = {"ours": root / "tf-plugin", "peer": root / "tf-local", "synced": root / "tf-synced"}
    prefixes = {"ours": f"direct://{dirs['ours']}/ckpt", "peer": str(dirs["peer"] / "ckpt")}
    logical = sum(a.nbytes for a in state.values())

    def durable_local_write() -> None:
        ckpt.write(str(dirs["synced"] / "ckpt"))
        _fsync_tree(dirs["synced"])

    def setup(key: str) -> None:
        shutil.rmtree(dirs[key], ignore_errors=True)
        dirs[key].mkdir(parents=True)

    def restore(key: str) -> None:
        ckpt.read(prefixes[key]).assert_consumed()

    def drop_cache(_key: str) -> None:
        # Ours reads with O_DIRECT from the device; TF's plain reads would
        # otherwise come from the page cache its own write just filled.
        # Both sides start cold: every file under both checkpoint dirs is
        # synced and dropped from the page cache (no root needed).
        for d in dirs.values():
            for f in d.rglob("*"):
                if f.is_file():
                    fd = os.open(f, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(fd)

    saves: dict[str, Any] = {k: (lambda p=p: ckpt.write(p)) for k, p in prefixes.items()}
    saves["synced"] = durable_local_write
    saved = interleaved(saves, repeat, setup=setup)
    loaded = interleaved({k: (lambda k=k: restore(k)) for k in prefixes}, repeat, setup=drop_cache)
    peer_name = f"TF {tf.__version__} own local filesystem (same disk)"
    title = f"TensorFlow tf.train.Checkpoint %s {logical / (1 << 30):.2f} GiB fp32: %s"
    rows = [
        (
            "save",
            "s3dlio plugin direct:// vs TF local",
            saved["peer"],
            "ours durable (O_DIRECT + fsync at close), TF's page cache, no fsync",
        ),
        (
            "save",
            "s3dlio plugin direct:// vs TF local + fsync (both durable)",
            saved["synced"],
            "TF's write, then every file and directory of its checkpoint fsynced (timed): "
            "what a checkpoint that must survive a crash costs on TF's own filesystem",
        ),
        (
            "restore",
            "s3dlio plugin direct:// vs TF local",
            loaded["peer"],
            "both cold: every file of both checkpoints fsynced and dropped from "
            "the page cache (POSIX_FADV_DONTNEED) before each timed restore; ours O_DIRECT",
        ),
    ]
    for op, what, peer, notes in rows:
        ours = (saved if op == "save" else loaded)["ours"]
        bench.add(
            speed_row("frameworks", title % (op, what), logical, ours, peer_name, peer, notes=notes)
        )
    for key in prefixes:
        for v in variables:
            v.assign(tf.zeros_like(v))
        restore(key)
        for name, v in zip(names, variables, strict=True):
            if not np.array_equal(v.numpy(), state[name]):
                raise AssertionError(f"TensorFlow {key}: {name} restored with different values")
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)


def _fsync_tree(root: pathlib.Path) -> None:
    """fsync every file and directory under `root`, and `root` itself."""
    for path in [*root.rglob("*"), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _cloud_bases() -> dict[str, str]:
    out = {}
    if bucket := os.environ.get("S3DLIO_BENCH_S3_BUCKET"):
        out["s3"] = f"s3://{bucket}/tf-bench"
    if container := os.environ.get("S3DLIO_BENCH_AZ_CONTAINER"):
        out["az"] = f"az://{os.environ['S3DLIO_BENCH_AZ_ACCOUNT']}/{container}/tf-bench"
    return out


# Request size and threads of the raw-HTTP ceiling.
RAW_PIECE = 8 << 20
RAW_WORKERS = 8


def _raw_client(scheme: str) -> Any:
    if scheme == "s3":
        from _raw_s3 import RawS3

        return RawS3(RAW_WORKERS)
    from _raw_azure import RawAzure

    return RawAzure(RAW_WORKERS)


def _counted_save(scheme: str, save: Any) -> dict[str, int]:
    """The requests one `save()` sends, by kind, through a counting relay."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
    from request_counter import CountingProxy

    if scheme == "s3":
        name = "AWS_ENDPOINT_URL_S3"
        old = os.environ[name]
        port = int(old.rsplit(":", 1)[1])
    else:
        name = "AZURE_STORAGE_CONNECTION_STRING"
        old = os.environ[name]
        endpoint = dict(p.split("=", 1) for p in old.split(";") if p)["BlobEndpoint"]
        port = int(endpoint.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    proxy = CountingProxy(port)
    # The core resolves the endpoint from the environment when a store is
    # opened (every plugin op opens one), so this save goes through the relay.
    os.environ[name] = old.replace(f":{port}", f":{proxy.port}")
    try:
        save()
    finally:
        os.environ[name] = old
        proxy.close()
    return dict(proxy.reset())


def tensorflow_cloud(bench: Bench, state: dict[str, np.ndarray], repeat: int) -> None:
    """Save and restore through the plugin on s3:// and az:// against the
    raw-HTTP ceiling of the same server, plus the requests one save costs."""
    import tensorflow as tf

    import s3dlio_tf

    assert s3dlio_tf.registered()
    names = list(state)
    variables = [tf.Variable(state[k]) for k in names]
    ckpt = tf.train.Checkpoint(weights=variables)
    logical = sum(a.nbytes for a in state.values())
    buffers = [memoryview(np.ascontiguousarray(state[k])).cast("B") for k in names]
    from _raw_s3 import cut

    for scheme, base in _cloud_bases().items():
        raw = _raw_client(scheme)
        pieces = {f"tf-bench-raw/{i:05d}": p for i, p in enumerate(cut(buffers, RAW_PIECE))}
        readback = {k: [memoryview(bytearray(sum(len(x) for x in v)))] for k, v in pieces.items()}
        prefix = f"{base}/ckpt"

        def clear(key: str, base: str = base) -> None:
            if key == "ours" and tf.io.gfile.exists(base):
                tf.io.gfile.rmtree(base)

        def raw_read(raw: Any = raw, readback: dict[str, Any] = readback) -> None:
            if hasattr(raw, "get_all"):
                raw.get_all({k: [v] for k, v in readback.items()})
            else:
                raw.get_each(readback)

        def ours_restore(prefix: str = prefix) -> None:
            ckpt.read(prefix).assert_consumed()

        savers = {
            "ours": lambda prefix=prefix: ckpt.write(prefix),
            "peer": lambda raw=raw, pieces=pieces: raw.put_each(pieces),
        }
        if hasattr(raw, "put_multipart"):
            # TF writes the variables as one data file of unknown size, which
            # any client must send as a multipart upload: the ceiling for
            # storing them as one object, completion included.
            savers["one object"] = lambda raw=raw, pieces=pieces: raw.put_multipart(
                "tf-bench-raw/one-object", list(pieces.values())
            )
            one_object = "multipart upload of one object"
        elif hasattr(raw, "put_blocks"):
            # On Azure the same: Put Blocks, then one Put Block List.
            savers["one object"] = lambda raw=raw, pieces=pieces: raw.put_blocks(
                {"tf-bench-raw/one-object": [p for run in pieces.values() for p in run]},
                RAW_PIECE,
            )
            one_object = "Put Block + Put Block List of one object"
        try:
            saved = interleaved(savers, repeat, setup=clear)
            loaded = interleaved({"ours": ours_restore, "peer": raw_read}, repeat)
            for v in variables:
                v.assign(tf.zeros_like(v))
            ours_restore()
            for name, v in zip(names, variables, strict=True):
                if not np.array_equal(v.numpy(), state[name]):
                    raise AssertionError(f"TensorFlow {scheme}: {name} restored with other values")
            clear("ours")
            requests = _counted_save(scheme, lambda prefix=prefix: ckpt.write(prefix))
        finally:
            raw.close()
        total = sum(requests.values())
        copies = requests.get("copy (server-side)", 0) + requests.get("UploadPartCopy", 0)
        shown = ", ".join(f"{k} {n}" for k, n in sorted(requests.items()))
        server = "s3s-fs 0.14.1" if scheme == "s3" else "Azurite 3.37.0"
        peer_name = (
            f"raw HTTP ceiling ({server}; {RAW_PIECE >> 20} MiB requests, {RAW_WORKERS} threads)"
        )
        if "one object" in saved:
            bench.add(
                speed_row(
                    "frameworks",
                    f"TensorFlow tf.train.Checkpoint save {logical / (1 << 30):.2f} GiB fp32: "
                    f"s3dlio plugin {scheme}:// vs raw HTTP, one object",
                    logical,
                    saved["ours"],
                    f"raw HTTP {one_object} ({server}; "
                    f"{RAW_PIECE >> 20} MiB parts, {RAW_WORKERS} threads)",
                    saved["one object"],
                    notes=(
                        "the same bytes as one object, as TF's data file is stored; TF's "
                        "two renames are server-side copies of it"
                        + ("; s3s-fs's completion rewrites it too" if scheme == "s3" else "")
                    ),
                )
            )
        for op, runs in [("save", saved), ("restore", loaded)]:
            bench.add(
                speed_row(
                    "frameworks",
                    f"TensorFlow tf.train.Checkpoint {op} {logical / (1 << 30):.2f} GiB fp32: "
                    f"s3dlio plugin {scheme}:// vs raw HTTP",
                    logical,
                    runs["ours"],
                    peer_name,
                    runs["peer"],
                    notes=(
                        f"one save: {total} requests, {copies} server-side copies ({shown})"
                        if op == "save"
                        else "ours checks the CRC32C of every file read whole"
                    ),
                )
            )
        clear("ours")


# The saver the memory test runs too: one variable, peak RSS sampled.
MEMORY_SAVER = pathlib.Path(__file__).resolve().parent.parent / "tests" / "tf_memory_saver.py"


def _save_rss(prefix: str, gib: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(MEMORY_SAVER), prefix, str(gib)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory saver failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tensorflow_memory(bench: Bench, scratch: Any) -> None:
    """Peak RSS growth while one large variable is saved: plugin on
    direct:// against TF's local save, each in a fresh process."""
    gib = 0.5 if bench.quick else 4.0
    root = pathlib.Path(scratch)
    dirs = {"ours": root / "tf-mem-plugin", "peer": root / "tf-mem-local"}
    prefixes = {"ours": f"direct://{dirs['ours']}/ckpt", "peer": str(dirs["peer"] / "ckpt")}
    got = {}
    try:
        for key in ("ours", "peer"):
            shutil.rmtree(dirs[key], ignore_errors=True)
            dirs[key].mkdir(parents=True)
            got[key] = _save_rss(prefixes[key], gib)
    finally:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    bench.add(
        Row(
            "frameworks",
            f"TensorFlow tf.train.Checkpoint save of one {gib:g} GiB variable: "
            "peak RSS growth, s3dlio plugin direct:// vs TF local",
            got["ours"]["growth_mib"],
            "TF own local filesystem (same disk)",
            got["peer"]["growth_mib"],
            "MiB",
            higher_is_better=False,
            notes=(
                "target: under 512 MiB for 4 GiB; save took "
                f"{got['ours']['seconds']:.1f} s ours, {got['peer']['seconds']:.1f} s TF"
            ),
        )
    )
