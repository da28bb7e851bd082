"""Local disk and codec basics: durable writes through direct:// against
buffered writes with fsync, compression on all cores against one, and
compression ratios of simple float data.

- Durable write of the same bytes (2 GiB; 256 MiB with --quick) to the
  work disk: s3dlio direct:// (O_DIRECT, fsync) against s3dlio file:// with
  fsync and against Python's open().write() + os.fsync().
- Compression throughput at levels 1 and 3 into memory:// (no disk), one
  frame per core against `compression_threads=1`.
- stored/logical of numpy float32 (standard normal), bfloat16 (the same
  values rounded) and zeros, with and without the byte-grouping filter.
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np
from _common import OUT_DIR, Bench, Row, interleaved, speed_row

import s3dlio

CORES = os.cpu_count() or 1


def python_write(path: str, data: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(memoryview(data))
        f.flush()
        os.fsync(f.fileno())


def durable_writes(bench: Bench) -> None:
    size = (256 << 20) if bench.quick else (2 << 30)
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    direct = f"direct://{OUT_DIR}/local-direct.bin"
    buffered = f"file://{OUT_DIR}/local-file.bin"
    plain = str(OUT_DIR / "local-python.bin")
    runs = interleaved(
        {
            "direct": lambda: s3dlio.put_bytes(direct, data, fsync=True),
            "file": lambda: s3dlio.put_bytes(buffered, data, fsync=True),
            "python": lambda: python_write(plain, data),
        },
        2,
        warmup=False,  # whole-disk writes: nothing to warm up, much to wait for
    )
    for path in [
        OUT_DIR / "local-direct.bin",
        OUT_DIR / "local-file.bin",
        OUT_DIR / "local-python.bin",
    ]:
        path.unlink(missing_ok=True)
    what = f"durable write of {size >> 20} MiB"
    for key, peer in [
        ("file", "s3dlio file:// + fsync"),
        ("python", "Python open().write() + os.fsync()"),
    ]:
        bench.add(
            speed_row(
                "local",
                f"{what}: direct://",
                size,
                runs["direct"],
                peer,
                runs[key],
                notes="work disk (see machine); best of interleaved runs",
            )
        )


def threads_scaling(bench: Bench) -> None:
    n = (64 << 20) if bench.quick else (256 << 20)
    data = np.random.default_rng(1).standard_normal(n // 4).astype(np.float32)
    for level in [1, 3]:
        for dtype, label in [(None, "plain zstd"), ("float32", "byte-grouped")]:
            uri = "memory://bench-local/t"
            put = functools.partial(
                s3dlio.put_bytes, uri, data, compression_level=level, dtype=dtype
            )
            runs = interleaved(
                {"all": put, "one": functools.partial(put, compression_threads=1)},
                2 if bench.quick else 3,
            )
            s3dlio.delete(uri)
            bench.add(
                speed_row(
                    "local",
                    f"compress {n >> 20} MiB float32, L{level} {label}: all {CORES} cores",
                    n,
                    runs["all"],
                    "same, compression_threads=1",
                    runs["one"],
                    notes="into memory://; ours/peer is the speed-up from parallel frames",
                )
            )


def ratios(bench: Bench) -> None:
    n = (16 << 20) if bench.quick else (64 << 20)
    f32 = np.random.default_rng(2).standard_normal(n // 4).astype(np.float32)
    bits = f32.view(np.uint32)
    bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    for name, arr, dtype in [
        ("numpy float32 (standard normal)", f32, "float32"),
        ("bfloat16 (the same values rounded)", bf16, "bfloat16"),
        ("zeros (float32)", np.zeros(n // 4, np.float32), "float32"),
    ]:
        for level in [1, 3]:
            g = s3dlio.put_bytes(
                "memory://bench-local/r", arr, compression_level=level, dtype=dtype
            )
            p = s3dlio.put_bytes("memory://bench-local/r", arr, compression_level=level)
            s3dlio.delete("memory://bench-local/r")
            bench.add(
                Row(
                    "local",
                    f"stored/logical, {name}, L{level}: byte-grouped",
                    g["ratio"],
                    "plain zstd (s3dlio)",
                    p["ratio"],
                    "stored/logical",
                    higher_is_better=False,
                    # Where both ratios round to 0.0000 the ratio between
                    # them is a few frame headers: the bytes say so.
                    notes=f"{arr.nbytes >> 20} MiB; stored {g['stored_size']:,} vs "
                    f"{p['stored_size']:,} bytes",
                )
            )


def main() -> None:
    bench = Bench(__doc__.splitlines()[0])
    t = time.time()
    durable_writes(bench)
    threads_scaling(bench)
    ratios(bench)
    print(f"bench_local done in {time.time() - t:.0f}s")


if __name__ == "__main__":
    main()
