"""The release wheel works on a Python other than the dev venv's.

Builds the stable-ABI wheel (cp311-abi3, as `make wheels` does, but linked
here without zig: the manylinux check is `make wheels`' job) against the
release build of the core already in target/, installs it into a clean venv
of CPython 3.12 (or 3.13) holding only numpy, and runs tests/wheel_smoke.py
there: import, a checkpoint roundtrip on file://, `s3dlio --version`,
`s3dlio verify` on a good and a damaged checkpoint, and the ImportError that
names `s3dlio[torch]`. The venv is kept in target/wheel-smoke for the next run.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest
import tomllib
from wheel_check import ROOT, find_python, smoke, venv_with_wheel

WORK = ROOT / "target" / "wheel-smoke"
OTHER_PYTHONS = ("3.12", "3.13")


def packaged_python_packages() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["maturin"]["python-packages"]


def test_abi3_wheel_runs_on_another_python() -> None:
    found = [(v, p) for v in OTHER_PYTHONS if (p := find_python(v)) is not None]
    if not found:
        pytest.skip(f"no CPython {' or '.join(OTHER_PYTHONS)} here (pyenv or PATH)")
    version, python = found[0]
    dist = WORK / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    maturin = pathlib.Path(sys.executable).with_name("maturin")
    build = subprocess.run(
        [maturin, "build", "--release", "--locked", "--features", "abi3",
         "--compatibility", "linux", "--interpreter", python, "--out", dist],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-4000:]
    (wheel,) = dist.glob("*.whl")
    assert "-cp311-abi3-" in wheel.name, wheel.name

    names = set(zipfile.ZipFile(wheel).namelist())
    for package in packaged_python_packages():
        assert f"{package}/__init__.py" in names, f"{package} missing from {wheel.name}"
    assert "s3dlio/_native.abi3.so" in names

    vpy = venv_with_wheel(python, dist, WORK / f"venv-{version}")
    line = smoke(vpy)
    assert line.startswith("wheel smoke check passed") and f"on Python {version}." in line, line
