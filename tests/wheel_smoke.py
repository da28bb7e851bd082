"""Smoke check of an installed s3dlio wheel, run by that wheel's interpreter.

`tests/test_wheel.py` and `make wheels` run it with the python of a clean
venv holding one built wheel (and numpy, nothing else), from a directory
outside the repository so that the source tree cannot stand in for the
installed package. Argument: a scratch directory. Exits non-zero, with the
reason on stderr, at the first thing that does not work.
"""

from __future__ import annotations

import importlib
import pathlib
import shutil
import subprocess
import sys

import numpy as np

import s3dlio


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"wheel smoke check failed: {what}")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


def main(scratch: pathlib.Path) -> None:
    installed = pathlib.Path(s3dlio.__file__).resolve()
    check("site-packages" in installed.parts, f"s3dlio imported from {installed}, not the wheel")

    # A small checkpoint on file://, compressed and byte-grouped, restored bit-exactly.
    base = f"file://{scratch}/run"
    weights = np.linspace(-1, 1, 50_000, dtype=np.float32)
    store = s3dlio.PyCheckpointStore(base, compression_level=1)
    store.save(step=7, epoch=1, framework="numpy", data=weights)
    restored = np.frombuffer(store.load_latest() or b"", dtype=np.float32)
    check(np.array_equal(restored, weights), "checkpoint roundtrip on file:// changed the data")
    check([c.step for c in store.list_checkpoints()] == [7], "list_checkpoints lost step 7")

    # The console script installed beside this interpreter.
    exe = shutil.which("s3dlio", path=str(pathlib.Path(sys.executable).parent))
    if exe is None:
        sys.exit("wheel smoke check failed: the wheel installs no s3dlio command")
    out = run(exe, "--version")
    check(out.returncode == 0 and s3dlio.__version__ in out.stdout, f"--version: {out}")
    out = run(exe, "verify", base)
    check(out.returncode == 0, f"verify of a good checkpoint: {out}")

    # verify reads the stored bytes: one flipped byte is exit code 1.
    stored = max((p for p in scratch.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    out = run(exe, "verify", base)
    check(out.returncode == 1, f"verify of a damaged checkpoint: {out}")

    # No framework here: each adapter says which extra installs it.
    for adapter, extra in (("s3dlio_torch", "torch"), ("s3dlio_jax", "jax"), ("s3dlio_tf", "tf")):
        try:
            importlib.import_module(adapter)
        except ImportError as err:
            check(f"s3dlio[{extra}]" in str(err), f"{adapter} without its framework: {err}")
        else:
            check(False, f"{adapter} imported without its framework installed")
    print(
        f"wheel smoke check passed: s3dlio {s3dlio.__version__} on Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
