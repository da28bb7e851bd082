"""`dcp.async_save`: how long the caller is blocked while the state dict is
copied to host memory, s3dlio_torch's staging against torch's, same run,
same data.

Two CPU state dicts of about 1 GiB (less with --quick): fp32 weights in a
decoder's shapes (a 250 MiB embedding, 16-44 MiB layer matrices), and
fp32/bf16 tensors of 64 KiB to 16 MiB. The difference matters because
glibc hands memory of up to 32 MiB back to the next allocation from its
heap, already faulted in, while larger blocks are fresh mappings each
time (a page fault per 4 KiB on first touch). Each
contender saves it to file:// (its own directory, removed before every
save) with `dcp.async_save(..., no_dist=True)` in thread mode; the time
measured is the call's (the copy training waits for), then the upload is
waited for outside it, so every save starts with none in flight, as a
training loop that waits for the previous checkpoint does. One untimed
save each first, then best of 3 (1 with --quick), interleaved. Rows
(group "async"), seconds, lower is better:

- S3DlioWriter (its own `stage`: host copies kept from save to save)
  against torch's FileSystemWriter as `dcp.async_save` stages for it by
  default (a stager made for the call: fresh memory every save);
- the same against FileSystemWriter with torch's `DefaultStager` kept by
  the caller across saves (torch's cache, which a caller must keep and
  must not reuse while a save is in flight).

On a GPU machine bench/bench_gpu.py measures the same call from CUDA
against the pinned device-to-host copy.

    python bench/report.py --only bench_async.py [--quick]
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from _common import OUT_DIR, Bench, Row
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

from s3dlio_torch import S3DlioReader, S3DlioWriter, _async_staging

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

SCRATCH = OUT_DIR / "async"
THREADS = min(8, os.cpu_count() or 1)


def transformer_state(quick: bool) -> dict[str, Any]:
    """fp32 weights in a decoder's shapes (hidden 2048, MLP 5632, vocab
    32000; hidden 1024 and 2 layers with --quick): most bytes in tensors
    above glibc's largest mmap threshold (32 MiB)."""
    hidden, mlp, vocab, layers = (1024, 2816, 32000, 2) if quick else (2048, 5632, 32000, 4)
    g = torch.Generator().manual_seed(11)
    sd: dict[str, Any] = {"embed.weight": torch.randn(vocab, hidden, generator=g)}
    for i in range(layers):
        for name in ("q", "k", "v", "o"):
            sd[f"layer{i}.{name}.weight"] = torch.randn(hidden, hidden, generator=g)
        for name in ("gate", "up", "down"):
            shape = (hidden, mlp) if name == "down" else (mlp, hidden)
            sd[f"layer{i}.{name}.weight"] = torch.randn(*shape, generator=g)
        sd[f"layer{i}.norm.weight"] = torch.ones(hidden)
    sd["step"] = torch.tensor(100)
    sd["epoch"] = 3
    return sd


def small_state(quick: bool) -> dict[str, Any]:
    """fp32 and bf16 tensors of 64 KiB to 16 MiB (1 GiB; 256 MiB with
    --quick): sizes glibc serves again from its heap after a free."""
    total = (256 << 20) if quick else (1 << 30)
    g = torch.Generator().manual_seed(12)
    sizes = [16 << 20, 4 << 20, 1 << 20, 64 << 10]
    sd: dict[str, Any] = {}
    used, i = 0, 0
    while used < total:
        nbytes = sizes[i % len(sizes)]
        dtype = torch.bfloat16 if i % 3 == 0 else torch.float32
        numel = nbytes // torch.tensor([], dtype=dtype).element_size()
        sd[f"layer{i}.weight"] = torch.randn(numel, generator=g).to(dtype)
        sd[f"layer{i}.step"] = torch.tensor(i)
        used += nbytes
        i += 1
    sd["epoch"] = 3
    return sd


def blocked(save: Callable[[str], Any], label: str) -> Callable[[], float]:
    """A call of `save` to its own fresh directory: the seconds it held the
    caller; the upload is waited for afterwards, untimed."""

    def run() -> float:
        where = SCRATCH / label
        shutil.rmtree(where, ignore_errors=True)
        t = time.perf_counter()
        future = save(f"{where}")
        took = time.perf_counter() - t
        future.result()
        return took

    return run


def check(sd: dict[str, Any], where: str) -> None:
    got = {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else v for k, v in sd.items()}
    dcp.load(got, storage_reader=S3DlioReader(where), no_dist=True)
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(got[k], v), k


def measure(bench: Bench, label: str, sd: dict[str, Any], repeat: int) -> None:
    logical = sum(v.nbytes for v in sd.values() if isinstance(v, torch.Tensor))
    kept = DefaultStager(StagingOptions(False, False, False, False))

    def ours(where: str) -> Any:
        writer = S3DlioWriter(f"file://{where}", thread_count=THREADS, sync_files=False)
        return dcp.async_save(sd, storage_writer=writer, no_dist=True)

    def torch_default(where: str) -> Any:
        writer = dcp.FileSystemWriter(where, thread_count=THREADS, sync_files=False)
        return dcp.async_save(sd, storage_writer=writer, no_dist=True)

    def torch_kept(where: str) -> Any:
        writer = dcp.FileSystemWriter(where, thread_count=THREADS, sync_files=False)
        return dcp.async_save(sd, storage_writer=writer, no_dist=True, async_stager=kept)

    contenders = {
        "ours": blocked(ours, "ours"),
        "torch-default": blocked(torch_default, "torch-default"),
        "torch-kept": blocked(torch_kept, "torch-kept"),
    }
    best = dict.fromkeys(contenders, float("inf"))
    for fn in contenders.values():  # untimed: first use of every path
        fn()
    for _ in range(repeat):
        for name, fn in contenders.items():
            best[name] = min(best[name], fn())
    check(sd, f"file://{SCRATCH / 'ours'}")
    kept.close()
    _async_staging.STAGING.release()

    size = f"{logical / (1 << 30):.2f} GiB"
    rate = ", ".join(f"{k} {logical / v / 1e9:.2f}" for k, v in best.items())
    notes = (
        f"{size} on the CPU, {len(sd)} entries, thread mode, file:// without fsync; best of "
        f"{repeat} after one untimed save each; copy GB/s: {rate}; ours and the kept "
        "DefaultStager hold their host copy between saves"
    )
    op = f"dcp.async_save: caller blocked, {label}"
    peers = {
        "torch-default": "torch FileSystemWriter, torch's default staging (a stager per call)",
        "torch-kept": "torch FileSystemWriter with a DefaultStager kept across saves by the caller",
    }
    for key, peer_name in peers.items():
        bench.add(
            Row(
                "async",
                op,
                best["ours"],
                peer_name,
                best[key],
                "s",
                higher_is_better=False,
                notes=notes,
            )
        )


def main() -> None:
    bench = Bench(__doc__.splitlines()[0])
    repeat = 1 if bench.quick else 3
    measure(bench, "decoder-shaped fp32 weights", transformer_state(bench.quick), repeat)
    measure(bench, "tensors of 64 KiB-16 MiB", small_state(bench.quick), repeat)
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
