"""What every bench/bench_*.py shares: the result-row format, QUICK mode,
timing and peak-RSS measurement. See bench/README.md for the format.

A bench script is run by bench/report.py as

    python bench/bench_x.py --out ROWS.jsonl [--quick]

(or with S3DLIO_BENCH_OUT / S3DLIO_BENCH_QUICK=1 in the environment) and
appends one JSON object per measured comparison to ROWS.jsonl.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

BENCH_DIR = pathlib.Path(__file__).resolve().parent
# Scratch files (large): on the work disk, never tmpfs, so direct:// works.
OUT_DIR = BENCH_DIR / "out"


@dataclass
class Row:
    """One comparison: our number and the peer's for the same operation
    on the same data, machine and run."""

    group: str  # section of the report: "compression", "local", "s3", ...
    operation: str  # what was measured, e.g. "fp32 weights L1: compress"
    ours: float | None
    peer_name: str  # e.g. "zipnn 0.5.4 (torch mode, 2 threads)"
    peer: float | None
    unit: str  # "MB/s", "s", "stored/logical", ...
    higher_is_better: bool = True
    ours_rss_mib: float | None = None  # peak RSS growth during our run
    peer_rss_mib: float | None = None
    notes: str = ""
    ratio: float | None = field(default=None)  # ours / peer, filled in

    def __post_init__(self) -> None:
        if self.ratio is None and self.ours is not None and self.peer:
            self.ratio = self.ours / self.peer


class Bench:
    """Command line, QUICK mode and the output file of one bench script."""

    def __init__(self, description: str) -> None:
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--out", default=os.environ.get("S3DLIO_BENCH_OUT"))
        parser.add_argument(
            "--quick",
            action="store_true",
            default=os.environ.get("S3DLIO_BENCH_QUICK", "") not in ("", "0"),
        )
        args = parser.parse_args()
        self.quick: bool = args.quick
        self.out: pathlib.Path | None = pathlib.Path(args.out) if args.out else None
        OUT_DIR.mkdir(parents=True, exist_ok=True)

    def add(self, row: Row) -> None:
        line = json.dumps(asdict(row))
        if self.out is not None:
            with open(self.out, "a") as f:
                f.write(line + "\n")
        shown = "n/a" if row.ratio is None else f"{row.ratio:.3f}"
        print(
            f"[{row.group}] {row.operation}: ours {fmt(row.ours)} {row.unit}, "
            f"{row.peer_name} {fmt(row.peer)} -> ours/peer {shown}",
            flush=True,
        )


def speed_row(
    group: str,
    operation: str,
    nbytes: int,
    ours: Timing,
    peer_name: str,
    peer: Timing,
    notes: str = "",
) -> Row:
    """A MB/s row from two `interleaved` timings of the same `nbytes`."""
    return Row(
        group,
        operation,
        mb_per_s(nbytes, ours.seconds),
        peer_name,
        mb_per_s(nbytes, peer.seconds),
        "MB/s",
        ours_rss_mib=ours.rss_mib,
        peer_rss_mib=peer.rss_mib,
        notes=notes,
    )


def dd_limits(directory: pathlib.Path, nbytes: int, repeat: int) -> tuple[float, float]:
    """Best seconds of `dd` writing (O_DIRECT, fsync) then reading (O_DIRECT)
    `nbytes` in 64 MiB blocks in `directory`: the disk's limit for direct://
    rows, on the same disk in the same run."""
    block = 64 << 20
    path = directory / "dd.bin"
    count = max(1, nbytes // block)
    write = ["dd", "if=/dev/zero", f"of={path}", "bs=64M", f"count={count}"]
    write += ["oflag=direct", "conv=fsync", "status=none"]
    read = ["dd", f"if={path}", "of=/dev/null", "bs=64M", "iflag=direct", "status=none"]
    best_w = best_r = float("inf")
    try:
        for _ in range(max(1, repeat)):
            for cmd, is_write in ((write, True), (read, False)):
                t = time.perf_counter()
                subprocess.run(cmd, check=True)
                took = time.perf_counter() - t
                if is_write:
                    best_w = min(best_w, took)
                else:
                    best_r = min(best_r, took)
    finally:
        path.unlink(missing_ok=True)
    # Times for the whole blocks dd moved, scaled to `nbytes`.
    scale = nbytes / (count * block)
    return best_w * scale, best_r * scale


def fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.4f}"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Peak growth of this process's RSS (MiB) while the block runs,
    sampled every 5 ms: `with peak_rss() as m: ...; m["mib"]`."""
    gc.collect()
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_bytes())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    result: dict[str, float] = {}
    try:
        yield result
    finally:
        done.set()
        t.join()
        peak[0] = max(peak[0], _rss_bytes())
        result["mib"] = (peak[0] - base) / (1 << 20)


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any, float]:
    """Run `fn` once untimed, then `repeat` times; (fastest seconds, last
    result, peak RSS growth in MiB over the timed runs)."""
    best = float("inf")
    result: Any = fn()  # untimed warm-up, as in `interleaved`
    rss = 0.0
    for _ in range(max(1, repeat)):
        with peak_rss() as m:
            t = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - t)
        rss = max(rss, m["mib"])
    return best, result, rss


def mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# Where bench/_servers.py puts each test server's process id.
S3_PID_ENV = "S3DLIO_BENCH_S3_PID"
AZURE_PID_ENV = "S3DLIO_BENCH_AZ_PID"


def server_cpu(pid_env: str) -> float:
    """CPU seconds the server whose pid is in the environment variable
    `pid_env` has used so far (0 without one): the server shares the cores
    with the clients, so its work per byte is part of their comparison."""
    pid = os.environ.get(pid_env)
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime, fields 14 and 15 of proc(5), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timing:
    seconds: float  # fastest wall time
    cpu_seconds: float  # least CPU time (all threads) of one run
    rss_mib: float  # peak RSS growth of any run
    result: Any  # what the last run returned


def interleaved(
    fns: dict[str, Callable[[], Any]],
    repeat: int,
    warmup: bool = True,
    setup: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Run each contender `repeat` times round-robin (A B C A B C ...), so
    that a burst of load from elsewhere hits them alike; keep the best
    wall and CPU time of each. On a shared machine the CPU time (MB per
    CPU-second) is the steadier measure of the two. `setup(name)` runs
    untimed before every call (e.g. to remove the previous run's output)."""
    out = {k: Timing(float("inf"), float("inf"), 0.0, None) for k in fns}
    # One untimed round first: thread pools, codec contexts and page faults
    # of first use are not what a steady checkpoint loop pays.
    for k, fn in fns.items() if warmup else []:
        if setup:
            setup(k)
        fn()
    for _ in range(max(1, repeat)):
        for k, fn in fns.items():
            if setup:
                setup(k)
            t = out[k]
            t.result = None  # don't hold the previous result while measuring
            with peak_rss() as m:
                c = cpu_seconds()
                w = time.perf_counter()
                t.result = fn()
                t.seconds = min(t.seconds, time.perf_counter() - w)
                t.cpu_seconds = min(t.cpu_seconds, cpu_seconds() - c)
            t.rss_mib = max(t.rss_mib, m["mib"])
    return out
