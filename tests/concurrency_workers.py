"""Processes for tests/test_concurrency.py, run as
``python concurrency_workers.py <job> <base> <args...>``; each prints one
JSON line with its outcome."""

from __future__ import annotations

import json
import sys
import time

import s3dlio


def data(tag: int, n: int = 200_000) -> bytes:
    return bytes((i * 31 + tag) & 0xFF for i in range(n))


def save(base: str, step: int, tag: int, overwrite: bool, start_at: float) -> dict:
    store = s3dlio.PyCheckpointStore(base, compression_level=1)
    payload = data(tag)
    while time.time() < start_at:
        time.sleep(0.001)
    try:
        store.save(step, 0, "conc", payload, overwrite=overwrite)
        return {"ok": True, "tag": tag}
    except FileExistsError as e:
        return {"ok": False, "tag": tag, "error": str(e)}


def overwrite_loop(base: str, step: int, rounds: int) -> dict:
    store = s3dlio.PyCheckpointStore(base, compression_level=1)
    for tag in range(1, rounds + 1):
        store.save(step, 0, "conc", data(tag), overwrite=True)
    return {"ok": True}


def read_loop(base: str, step: int, rounds: int) -> dict:
    store = s3dlio.PyCheckpointStore(base)
    valid = {data(tag) for tag in range(0, 64)}
    reads = 0
    for _ in range(rounds):
        got = store.load(step)
        if got not in valid:
            return {"ok": False, "error": "bytes of no save"}
        reads += 1
    return {"ok": True, "reads": reads}


def rank(base: str, step: int, rank_: int, world: int) -> dict:
    store = s3dlio.PyCheckpointStore(base)
    w = store.writer(world, rank_)
    w.save_distributed_shard(step, 0, "conc", data(100 + rank_, 50_000))
    if rank_ == 0:
        w.finalize_distributed_checkpoint(step, 0, "conc", timeout=60.0)
    return {"ok": True}


if __name__ == "__main__":
    job, base, *rest = sys.argv[1:]
    args = [json.loads(a) for a in rest]
    out = {"save": save, "overwrite_loop": overwrite_loop, "read_loop": read_loop, "rank": rank}[
        job
    ](base, *args)
    print(json.dumps(out))
