"""`make demo`: a real multi-rank checkpoint saved, verified and restored.

Four processes each write one rank's shard (numpy arrays, a few hundred MB
in all) to a compressed file:// checkpoint; rank 0 commits it. Then the
`s3dlio info` and `s3dlio verify` commands inspect it, and the shards are
restored and compared bit for bit.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

import s3dlio

WORLD = 4
PER_RANK = 96 << 20  # bytes of state per rank: ~384 MiB in all
LEVEL = 1
OUT = pathlib.Path(os.environ.get("S3DLIO_DEMO_DIR", "demo-out")).resolve()
URI = f"file://{OUT}/run"


def rank_state(rank: int) -> dict[str, np.ndarray]:
    """Weights like a model's (fp32 and bf16-like halves), plus optimizer
    state whose second moment starts mostly at zero."""
    rng = np.random.default_rng(rank)
    n = PER_RANK // 4 // 4
    weights = (rng.standard_normal(n) * 0.02).astype(np.float32)
    bf16_like = (weights.view(np.uint32) & 0xFFFF0000).view(np.float32)
    exp_avg = (weights * 0.1).astype(np.float32)
    exp_avg_sq = np.zeros(n, dtype=np.float32)
    exp_avg_sq[: n // 10] = np.abs(rng.standard_normal(n // 10)).astype(np.float32) * 1e-6
    return {"w": weights, "w_bf16": bf16_like, "m": exp_avg, "v": exp_avg_sq}


def save_rank(rank: int, records: mp.Queue) -> None:
    state = rank_state(rank)
    store = s3dlio.PyCheckpointStore(URI, compression_level=LEVEL)
    writer = store.writer(WORLD, rank)
    # Every array here is float32: saying so lets the codec group each
    # element's bytes into planes before zstd (see README, "Compressing
    # float weights").
    with writer.get_distributed_shard_stream(1000, 3, "numpy", dtype=np.float32) as stream:
        for arr in state.values():
            stream.write_chunk(arr)
        records.put(stream.finalize())


def mib(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    ctx = mp.get_context("spawn")
    records: mp.Queue = ctx.Queue()
    print(f"saving a {WORLD}-rank checkpoint to {URI} (zstd level {LEVEL}) ...")
    t0 = time.perf_counter()
    procs = [ctx.Process(target=save_rank, args=(r, records)) for r in range(WORLD)]
    for p in procs:
        p.start()
    shards = [records.get(timeout=600) for _ in range(WORLD)]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            print(f"rank process failed with exit code {p.exitcode}", file=sys.stderr)
            return 1
    store = s3dlio.PyCheckpointStore(URI, compression_level=LEVEL)
    info = store.writer(WORLD, 0).finalize_distributed_checkpoint(
        1000, 3, "numpy", shards, {"model": "demo", "ranks": WORLD}
    )
    save_s = time.perf_counter() - t0
    print(
        f"saved  {mib(info.logical_size)} -> {mib(info.stored_size)} stored, "
        f"ratio {info.ratio:.3f}, {mib(info.logical_size / save_s)}/s"
    )

    cli = [sys.executable, "-m", "s3dlio._cli"]
    for args in (["info", URI], ["verify", URI]):
        print(f"\n$ s3dlio {' '.join(args)}", flush=True)
        rc = subprocess.run([*cli, *args]).returncode
        if rc != 0:
            print(f"s3dlio {args[0]} failed with exit code {rc}", file=sys.stderr)
            return 1

    print("\nrestoring and comparing bit for bit ...")
    reader = s3dlio.PyValidatedCheckpointReader(URI)
    t0 = time.perf_counter()
    restored = [reader.read_shard_array(1000, r, np.uint8) for r in range(WORLD)]
    load_s = time.perf_counter() - t0
    for rank, got in enumerate(restored):
        want = np.concatenate([a.view(np.uint8) for a in rank_state(rank).values()])
        if not np.array_equal(got, want):
            print(f"rank {rank} differs after restore", file=sys.stderr)
            return 1
    print(
        f"restored {mib(info.logical_size)} in {load_s:.2f}s "
        f"({mib(info.logical_size / load_s)}/s), every rank bit-exact, CRC32C verified"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
