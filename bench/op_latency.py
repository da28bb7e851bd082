"""Per-call latency of the one-object functions on s3:// (s3s-fs) and az://
(Azurite): every call opens its store, so this is what a store open costs
next to one small request. Not a report row (no peer to compare with): run
it by hand with the build to measure, e.g. before and after a change:

    .venv/bin/python bench/op_latency.py [--n 200]

It starts both servers itself (bench/_servers.py) and prints the median and
mean of `s3dlio.stat` and of `_native.head_object` (what the JAX path
objects' `exists()`/`stat()` call) per backend, in milliseconds; with
`--tf`, also `tf.io.gfile.exists` and `tf.io.gfile.stat` through the
TensorFlow plugin (one plugin op each).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _servers import started


def timed(fn, n: int) -> tuple[float, float]:  # noqa: ANN001 - any callable
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), statistics.fmean(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--tf", action="store_true", help="also time TF plugin ops")
    args = ap.parse_args()
    with started(["s3", "azure"]) as env:
        os.environ.update(env)
        import s3dlio
        from s3dlio import _native

        uris = {
            "s3": f"s3://{env['S3DLIO_BENCH_S3_BUCKET']}/op-latency/small.bin",
            "az": f"az://{env['S3DLIO_BENCH_AZ_ACCOUNT']}/{env['S3DLIO_BENCH_AZ_CONTAINER']}"
            "/op-latency/small.bin",
        }
        for name, uri in uris.items():
            s3dlio.put_bytes(uri, b"x" * 1000)
            s3dlio.stat(uri)  # warm-up: first client, first connection
            calls = [
                ("stat", lambda u=uri: s3dlio.stat(u)),
                ("head_object", lambda u=uri: _native.head_object(u, None)),
            ]
            if args.tf:
                import tensorflow as tf

                import s3dlio_tf

                s3dlio_tf.register()
                calls += [
                    ("tf exists", lambda u=uri: tf.io.gfile.exists(u)),
                    ("tf stat", lambda u=uri: tf.io.gfile.stat(u)),
                ]
            for label, fn in calls:
                med, mean = timed(fn, args.n)
                print(f"{name:3} {label:12} n={args.n}  median {med:6.2f} ms  mean {mean:6.2f} ms")


if __name__ == "__main__":
    main()
