"""Real processes: four ranks writing one checkpoint concurrently, and a
writer killed with SIGKILL mid-save."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

import s3dlio

WORLD = 4
N = 2_000_000  # float32 elements per rank: 8 MB


def rank_data(rank: int) -> np.ndarray:
    return np.random.default_rng(rank).standard_normal(N).astype(np.float32)


def _rank_main(uri: str, rank: int, level: int | None, records: mp.Queue) -> None:
    store = s3dlio.PyCheckpointStore(uri, compression_level=level)
    writer = store.writer(WORLD, rank)
    with writer.get_distributed_shard_stream(100, 1, "numpy") as stream:
        for chunk in np.array_split(rank_data(rank), 5):
            stream.write_chunk(chunk)
        records.put(stream.finalize())
    if rank == 0:
        # Rank 0 commits from the records the ranks stored, like a caller
        # without a collective would.
        writer.finalize_distributed_checkpoint(100, 1, "numpy", None, {"ranks": WORLD}, 60.0)


def test_four_processes_write_then_restore_bit_exact(base_uri: str) -> None:
    ctx = mp.get_context("spawn")
    for level in (None, 1):
        uri = f"{base_uri}/mp-{level}"
        records: mp.Queue = ctx.Queue()
        procs = [
            ctx.Process(target=_rank_main, args=(uri, r, level, records)) for r in range(WORLD)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        store = s3dlio.PyCheckpointStore(uri)
        [info] = store.list_checkpoints()
        assert info.world_size == WORLD and info.user_meta == {"ranks": WORLD}
        reader = s3dlio.PyValidatedCheckpointReader(uri)
        for r in range(WORLD):
            assert np.array_equal(reader.read_shard_array(100, r, np.float32), rank_data(r))


KILLED_WRITER = textwrap.dedent(
    """
    import sys, numpy as np, s3dlio
    store = s3dlio.PyCheckpointStore(sys.argv[1], compression_level=1)
    stream = store.writer(1, 0).get_distributed_shard_stream(2, 0, "t")
    chunk = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    print("writing", flush=True)
    while True:
        stream.write_chunk(chunk)
    """
)


def test_sigkill_mid_save_keeps_previous_checkpoint(base_uri: str) -> None:
    uri = f"{base_uri}/killed"
    store = s3dlio.PyCheckpointStore(uri, compression_level=1)
    store.save(1, 0, "t", b"the good one")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, uri], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert store.load_latest() == b"the good one"
    assert [i.step for i in store.list_checkpoints()] == [1]
    # The half-written shard is invisible and a new save of that step works.
    assert all("step-000000000002" not in u for u in s3dlio.list(uri + "/"))
    store.save(2, 0, "t", b"after the crash")
    assert store.load_latest() == b"after the crash"
