"""TensorFlow rows of bench_frameworks.py: `tf.train.Checkpoint.write` /
`.read` through the s3dlio plugin on direct:// (durable: O_DIRECT data,
fsync at close) against TensorFlow's own local write on the same disk.
Both sides are TensorFlow's checkpoint code; only the filesystem differs.
Restores are checked bit-exact against the saved values."""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import numpy as np
from _common import Bench, Row, interleaved, mb_per_s


def tensorflow(bench: Bench, state: dict[str, np.ndarray], repeat: int, scratch: Any) -> None:
    import tensorflow as tf

    import s3dlio_tf

    assert s3dlio_tf.registered()
    names = list(state)
    variables = [tf.Variable(state[k]) for k in names]
    ckpt = tf.train.Checkpoint(weights=variables)
    root = pathlib.Path(scratch)
    dirs = {"ours": root / "tf-plugin", "peer": root / "tf-local"}
    prefixes = {"ours": f"direct://{dirs['ours']}/ckpt", "peer": str(dirs["peer"] / "ckpt")}
    logical = sum(a.nbytes for a in state.values())

    def setup(key: str) -> None:
        shutil.rmtree(dirs[key], ignore_errors=True)
        dirs[key].mkdir(parents=True)

    def restore(key: str) -> None:
        ckpt.read(prefixes[key]).assert_consumed()

    saved = interleaved(
        {k: (lambda p=p: ckpt.write(p)) for k, p in prefixes.items()}, repeat, setup=setup
    )
    loaded = interleaved({k: (lambda k=k: restore(k)) for k in prefixes}, repeat)
    peer_name = f"TF {tf.__version__} own local filesystem (same disk)"
    for op, runs in [("save", saved), ("restore", loaded)]:
        bench.add(
            Row(
                "frameworks",
                f"TensorFlow tf.train.Checkpoint {op} {logical / (1 << 30):.2f} GiB fp32: "
                "s3dlio plugin direct:// vs TF local",
                mb_per_s(logical, runs["ours"].seconds),
                peer_name,
                mb_per_s(logical, runs["peer"].seconds),
                "MB/s",
                ours_rss_mib=runs["ours"].rss_mib,
                peer_rss_mib=runs["peer"].rss_mib,
                notes="ours durable (O_DIRECT + fsync at close), TF's page cache, no fsync",
            )
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
