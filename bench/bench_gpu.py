"""Checkpoints of a CUDA state dict: s3dlio_torch against torch's own storage
layer and against the machine's limits, same process, same data, one run.

The state dict is GPU_BENCH_GIB (default 8, --quick 1) of bf16 tensors of
64 MiB on the CUDA device, saved with `dcp.save` and loaded with `dcp.load`
into CUDA tensors (checked bit for bit once per contender). Contenders run
interleaved, best of GPU_BENCH_REPEAT (default 2, --quick 1). Before every
load the checkpoint's pages are written back and dropped from the page cache
(fsync + POSIX_FADV_DONTNEED, no root needed), so every load reads the disk,
as `dd iflag=direct` does; GPU_BENCH_WARM=1 keeps them cached instead.
Rows (group "gpu"), GB/s of logical bytes:

- file:// vs torch FileSystemWriter/Reader, no fsync on either side;
- direct:// vs FileSystemWriter(sync_files=True);
- file:// zstd L1 byte-grouped vs FileSystemWriter (no fsync), and against
  our own uncompressed file:// save and load (the cores-scaling target);
- direct:// against `dd oflag=direct conv=fsync` / `dd iflag=direct` moving
  the same bytes in 64 MiB blocks on the same disk (the disk's limit);
- `dcp.async_save`: seconds the caller is blocked against the time of the
  pure device-to-host copy of every tensor into pinned memory, and against
  torch's FileSystemWriter's own staging;
- the pinned device-to-host copy rate itself (a limit, no peer).

Without a CUDA device the script prints why and writes no rows (report.py
lists it as skipped: `# bench-needs: cuda`). GPU_BENCH_DEVICE=cpu runs the
same code on CPU tensors (no pinned-copy rows): a check of the script, not
a measurement of anything the issue asks.

    python bench/bench_gpu.py [--quick] [--out rows.jsonl]
    bench/gpu_check.sh        # this plus the CUDA tests, into bench/results-gpu.md
"""

# bench-needs: cuda

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from _common import OUT_DIR, Bench, Row, dd_limits, interleaved

import s3dlio
from s3dlio_torch import S3DlioReader, S3DlioWriter

GROUP = "gpu"
TENSOR_BYTES = 64 << 20
THREADS = int(os.environ.get("THREADS", str(min(8, os.cpu_count() or 1))))
DEVICE = os.environ.get("GPU_BENCH_DEVICE", "cuda")
WARM = os.environ.get("GPU_BENCH_WARM", "") not in ("", "0")
SCRATCH = OUT_DIR / "gpu"


def machine() -> str:
    """One line: GPU, CPU cores, disk, versions (in every row's notes)."""
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "no GPU (CPU tensors)"
    fs = subprocess.run(
        ["df", "--output=fstype,source", str(SCRATCH)], capture_output=True, text=True
    ).stdout.split()
    disk = " on ".join(fs[-2:]) if len(fs) >= 2 else "?"
    return (
        f"{gpu}, {os.cpu_count()} cores, disk {disk}, Linux {platform.release()}, "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), s3dlio {s3dlio.__version__}, "
        f"thread_count={THREADS}"
    )


def make_state(total: int) -> dict[str, torch.Tensor]:
    """bf16 tensors with weight-like values (normal, small spread)."""
    gen = torch.Generator(device=DEVICE).manual_seed(17)
    count = max(1, total // TENSOR_BYTES)
    return {
        f"layer{i}.weight": (
            torch.randn(TENSOR_BYTES // 2, generator=gen, device=DEVICE) * 0.02
        ).to(torch.bfloat16)
        for i in range(count)
    }


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def drop_cache(directory: str) -> None:
    """Write back and drop a checkpoint's pages, so the next read hits the disk."""
    if WARM or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        fd = os.open(os.path.join(directory, name), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@dataclass
class Side:
    label: str
    writer: Callable[[str], Any]  # directory -> StorageWriter
    reader: Callable[[str], Any]  # directory -> StorageReader


SIDES = {
    "torch": Side(
        "torch",
        lambda d: dcp.FileSystemWriter(d, thread_count=THREADS, sync_files=False),
        dcp.FileSystemReader,
    ),
    "torch fsync": Side(
        "torch fsync",
        lambda d: dcp.FileSystemWriter(d, thread_count=THREADS, sync_files=True),
        dcp.FileSystemReader,
    ),
    "file": Side(
        "file",
        lambda d: S3DlioWriter(f"file://{d}", thread_count=THREADS, sync_files=False),
        lambda d: S3DlioReader(f"file://{d}"),
    ),
    "direct": Side(
        "direct",
        lambda d: S3DlioWriter(f"direct://{d}", thread_count=THREADS, sync_files=True),
        lambda d: S3DlioReader(f"direct://{d}"),
    ),
    "zstd": Side(
        "zstd",
        lambda d: S3DlioWriter(
            f"file://{d}", thread_count=THREADS, sync_files=False, compression_level=1
        ),
        lambda d: S3DlioReader(f"file://{d}"),
    ),
}


def where(label: str) -> str:
    return str(SCRATCH / label.replace(" ", "-"))


def save_fn(side: Side, state: dict[str, torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        dcp.save(state, storage_writer=side.writer(where(side.label)), no_dist=True)

    return run


def load_fn(side: Side, dest: dict[str, torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        dcp.load(dest, storage_reader=side.reader(where(side.label)), no_dist=True)
        sync()

    return run


def pinned_copy_seconds(state: dict[str, torch.Tensor], repeat: int) -> float:
    """Best time to copy every tensor into preallocated pinned host memory
    (one stream, no sync per tensor): the floor of any save from the GPU."""
    host = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True) for k, v in state.items()}
    best = float("inf")
    for _ in range(max(1, repeat) + 1):  # the first round warms up
        sync()
        t = time.perf_counter()
        for k, v in state.items():
            host[k].copy_(v, non_blocking=True)
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def async_blocked_seconds(
    state: dict[str, torch.Tensor], repeat: int, writer: Callable[[str], Any], label: str
) -> float:
    """Best time `dcp.async_save` with `writer(uri)` holds the caller. Two
    untimed saves first: S3DlioWriter's staging allocates its host copy at
    the first and pins it at the second (when it is reused)."""
    best = float("inf")
    for i in range(max(1, repeat) + 2):
        directory = where(f"async-{label}")
        shutil.rmtree(directory, ignore_errors=True)
        t = time.perf_counter()
        future = dcp.async_save(state, storage_writer=writer(str(directory)), no_dist=True)
        if i >= 2:
            best = min(best, time.perf_counter() - t)
        future.result()
    return best


def main() -> None:
    bench = Bench(__doc__.splitlines()[0])
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing measured")
        return
    gib = float(os.environ.get("GPU_BENCH_GIB", "1" if bench.quick else "8"))
    repeat = int(os.environ.get("GPU_BENCH_REPEAT", "1" if bench.quick else "2"))
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    state = make_state(int(gib * (1 << 30)))
    nbytes = sum(t.nbytes for t in state.values())
    gb = nbytes / 1e9
    about = machine()
    print(f"bench_gpu: {gb:.2f} GB bf16 on {about}", flush=True)

    def setup_save(label: str) -> None:
        shutil.rmtree(where(label), ignore_errors=True)

    saves = interleaved(
        {k: save_fn(s, state) for k, s in SIDES.items()},
        repeat,
        warmup=False,
        setup=setup_save,
    )
    dest = {k: torch.zeros_like(v) for k, v in state.items()}
    loads = interleaved(
        {k: load_fn(s, dest) for k, s in SIDES.items()},
        repeat,
        warmup=False,
        setup=lambda label: drop_cache(where(label)),
    )
    for label, side in SIDES.items():
        for t in dest.values():
            t.zero_()
        load_fn(side, dest)()
        for k, v in state.items():
            if not torch.equal(dest[k], v):
                raise AssertionError(f"{label}: {k} differs after load")

    def row(op: str, ours: str, peer: str, peer_name: str, note: str) -> None:
        for verb, timings in (("save", saves), ("load", loads)):
            o, p = timings[ours], timings[peer]
            bench.add(
                Row(
                    GROUP,
                    f"{op}: {verb}",
                    gb / o.seconds,
                    peer_name,
                    gb / p.seconds,
                    "GB/s",
                    ours_rss_mib=o.rss_mib,
                    peer_rss_mib=p.rss_mib,
                    notes=f"{note}; {about}",
                )
            )

    cache = "loads from page cache" if WARM else "loads from disk (cache dropped)"
    row("file://", "file", "torch", "torch FileSystemWriter/Reader", f"no fsync; {cache}")
    row(
        "direct://",
        "direct",
        "torch fsync",
        "torch FileSystemWriter(sync_files=True)/Reader",
        f"O_DIRECT vs buffered + fsync; {cache}",
    )
    row("file:// zstd L1 byte-grouped", "zstd", "torch", "torch FileSystemWriter/Reader", cache)
    row(
        "zstd L1 byte-grouped vs uncompressed",
        "zstd",
        "file",
        "s3dlio file:// uncompressed",
        f"target >= 0.9 on load and save; {cache}",
    )

    dd_w, dd_r = dd_limits(SCRATCH, nbytes, repeat)
    for verb, timings, dd_s, flag in (
        ("save", saves, dd_w, "oflag=direct conv=fsync"),
        ("load", loads, dd_r, "iflag=direct"),
    ):
        bench.add(
            Row(
                GROUP,
                f"direct:// vs the disk: {verb}",
                gb / timings["direct"].seconds,
                f"dd {flag} bs=64M",
                gb / dd_s,
                "GB/s",
                notes=f"target >= 0.9; same bytes, same disk; {about}",
            )
        )

    if DEVICE == "cuda":
        copy_s = pinned_copy_seconds(state, repeat)
        bench.add(
            Row(
                GROUP,
                "limit: device-to-host copy into pinned memory",
                gb / copy_s,
                "none (a limit)",
                None,
                "GB/s",
                notes=about,
            )
        )
        ours_blocked = async_blocked_seconds(
            state, repeat, lambda d: S3DlioWriter(f"file://{d}", thread_count=THREADS), "ours"
        )
        torch_blocked = async_blocked_seconds(
            state, repeat, lambda d: dcp.FileSystemWriter(d, thread_count=THREADS), "torch"
        )
        for peer_name, peer_s, note in (
            ("pure device-to-host copy into pinned memory", copy_s, "target <= 1.1"),
            (
                "torch FileSystemWriter (its own staging: fresh host memory each save)",
                torch_blocked,
                "best after two untimed saves each",
            ),
        ):
            bench.add(
                Row(
                    GROUP,
                    "dcp.async_save: caller blocked",
                    ours_blocked,
                    peer_name,
                    peer_s,
                    "s",
                    higher_is_better=False,
                    notes=f"{note}; {about}",
                )
            )
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
