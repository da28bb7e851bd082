"""What the client-against-a-server benches (bench_s3.py, bench_azure.py)
share: each peer and direction runs in a fresh child process that reports
one JSON line (wall time, CPU time, bytes moved, memory), a raw-curl
baseline whose work is in its curl children, and the rows that set our
result beside each peer's.

A fresh process per measurement keeps one client's thread pools, caches
and allocator state from helping or hurting the next one.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

from _common import Bench, Row, cpu_seconds, peak_rss, server_cpu

MIB = 1 << 20
RAW_CURL = "raw-curl"
# Why the raw baseline's numbers are not a client's: they are the server's.
RAW_CURL_NOTE = (
    "curl sends pre-cut part files / discards GET bodies, "
    "its RSS is the largest curl process's peak"
)

Result = dict[str, float]


@contextmanager
def measured(nbytes: int) -> Any:
    """Time the block in this process: `with measured(n) as r: work()`,
    then `r` holds seconds, cpu, bytes and rss_mib (peak RSS growth)."""
    result: Result = {"bytes": nbytes}
    with peak_rss() as m:
        start, cpu0 = time.perf_counter(), cpu_seconds()
        yield result
        result["seconds"] = time.perf_counter() - start
        result["cpu"] = cpu_seconds() - cpu0
    result["rss_mib"] = m["mib"]


def measured_curl(nbytes: int, work: Callable[[], None]) -> Result:
    """Time `work`, whose effort is in curl child processes: their CPU is
    counted with ours, and their memory is the largest curl's peak RSS
    (a child's own peak, not a growth)."""
    start, cpu0 = time.perf_counter(), cpu_seconds()
    work()
    seconds = time.perf_counter() - start
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "bytes": nbytes,
        "seconds": seconds,
        "cpu": r.ru_utime + r.ru_stime + cpu_seconds() - cpu0,
        "rss_mib": r.ru_maxrss / 1024,
    }


def report(result: Result) -> None:
    """A child's last stdout line: what `run_child` reads back."""
    print(json.dumps(result))


def add(total: Result | None, part: Result) -> Result:
    """Two measurements of one child summed; memory is the larger peak."""
    if total is None:
        return dict(part)
    return {
        "bytes": total["bytes"] + part["bytes"],
        "seconds": total["seconds"] + part["seconds"],
        "cpu": total["cpu"] + part["cpu"],
        "rss_mib": max(total["rss_mib"], part["rss_mib"]),
    }


def run_child(script: str, args: Sequence[str], what: str, server_pid_env: str) -> Result:
    """Run `python script ARGS` and return the JSON of its last line, with
    the CPU seconds the server (pid in `server_pid_env`) spent meanwhile;
    a failed child is an error carrying its stderr.

    Dirty pages reach the disk first: a measurement must not compete with
    the writeback of whatever ran before it (a source file just generated,
    the objects a faster put left pending), which would charge the first
    peer, or the one after the fastest, for another's writes."""
    os.sync()
    server0 = server_cpu(server_pid_env)
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    server = server_cpu(server_pid_env) - server0
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr}")
    result: Result = json.loads(out.stdout.strip().splitlines()[-1])
    result["server_cpu"] = server
    return result


def show(peer: str, op: str, r: Result) -> None:
    """One progress line per measurement."""
    print(
        f"  {op:9s} {peer:17s} {r['seconds']:7.2f} s {r['bytes'] / 1e6 / r['seconds']:8.1f} MB/s"
        f"  client CPU {r['cpu']:6.2f} s  server CPU {r['server_cpu']:6.2f} s"
        f"  peak RSS {r['rss_mib']:7.0f} MiB",
        flush=True,
    )


def keep_best(best: dict[Any, Result], key: Any, r: Result) -> None:
    """Keep the fastest of several rounds, with the largest memory peak
    any round reached (memory is a bound, not a best case)."""
    kept = best.get(key)
    if kept is None:
        best[key] = dict(r)
        return
    rss = max(kept["rss_mib"], r["rss_mib"])
    if r["seconds"] < kept["seconds"]:
        best[key] = dict(r)
    best[key]["rss_mib"] = rss


def random_file(path: pathlib.Path, size: int, seed: int = 0) -> None:
    """Incompressible data, written in pieces so the parent stays small."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MIB)
            f.write(rng.bytes(n))
            left -= n


def split_file(src: str | pathlib.Path, part: int, into: pathlib.Path) -> list[str]:
    """The file cut into part files beforehand: curl uploads whole files."""
    into.mkdir(parents=True, exist_ok=True)
    out = []
    with open(src, "rb") as f:
        while chunk := f.read(part):
            p = into / f"part-{len(out) + 1:05d}"
            p.write_bytes(chunk)
            out.append(str(p))
    return out


def peer_rows(
    bench: Bench,
    group: str,
    operation: str,
    ours: Result,
    peers: dict[str, Result],
    peer_names: dict[str, str],
    notes: str,
    curl_note: str = RAW_CURL_NOTE,
) -> None:
    """One MB/s row per peer beside our result, with both clients' CPU
    (and `curl_note`, what the raw baseline did, on its row)."""
    for peer, theirs in peers.items():
        extra = f"; {curl_note}" if peer == RAW_CURL else ""
        bench.add(
            Row(
                group,
                operation,
                ours["bytes"] / 1e6 / ours["seconds"],
                peer_names[peer],
                theirs["bytes"] / 1e6 / theirs["seconds"],
                "MB/s",
                ours_rss_mib=ours["rss_mib"],
                peer_rss_mib=theirs["rss_mib"],
                notes=(
                    f"{notes}; client CPU {ours['cpu']:.1f} s vs {theirs['cpu']:.1f} s, "
                    f"server CPU {ours['server_cpu']:.1f} s vs {theirs['server_cpu']:.1f} s{extra}"
                ),
            )
        )
