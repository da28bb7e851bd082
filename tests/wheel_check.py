"""Install built s3dlio wheels into clean venvs of other Pythons and smoke-check them.

Used by `tests/test_wheel.py` (one wheel, in `make test`) and by `make wheels`
(every wheel in dist/, on each supported CPython found):

    python tests/wheel_check.py DIST_DIR WORK_DIR 3.10 3.11 3.12 3.13

Each venv holds the wheel and numpy, nothing else; pip picks the wheel whose
tags fit the interpreter from DIST_DIR alone, so a missing or mistagged wheel
fails here. Venvs are kept in WORK_DIR and reused (the wheel is reinstalled
every time), so a second run downloads nothing.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SMOKE = ROOT / "tests" / "wheel_smoke.py"


def numpy_pin() -> str:
    """The numpy requirement the dev venv is tested with (requirements.txt)."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if re.match(r"numpy\s*==", line):
            return line.strip()
    raise RuntimeError("requirements.txt pins no numpy")


# The wheel's own numpy requirement (pyproject.toml's dependencies).
WHEEL_NUMPY = "numpy>=1.26"


def find_python(version: str) -> pathlib.Path | None:
    """A working CPython `version` (\"3.12\"): pyenv's newest patch release, else PATH's."""
    pyenv = pathlib.Path(os.environ.get("PYENV_ROOT", pathlib.Path.home() / ".pyenv"))
    candidates = sorted(pyenv.glob(f"versions/{version}.*/bin/python{version}"), reverse=True)
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(pathlib.Path(on_path))
    for exe in candidates:
        # pyenv's shims are on PATH for every version but run only the active ones.
        probe = subprocess.run(
            [exe, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return exe
    return None


def run(argv: list[str | os.PathLike[str]], **kwargs: object) -> None:
    out = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if out.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} failed ({out.returncode}):\n{out.stdout}{out.stderr}"
        )


def venv_with_wheel(python: pathlib.Path, dist: pathlib.Path, venv: pathlib.Path) -> pathlib.Path:
    """`venv` (created once) holding numpy and the s3dlio wheel from `dist` that fits `python`."""
    vpy = venv / "bin" / "python"
    ready = venv / ".numpy-installed"
    if not ready.exists():
        run([python, "-m", "venv", "--clear", venv])
        try:
            run([vpy, "-m", "pip", "install", "-q", numpy_pin()])
        except RuntimeError:
            # The dev venv's numpy is newer than this Python supports (numpy
            # 2.3+ needs 3.11): take what the wheel itself asks for.
            run([vpy, "-m", "pip", "install", "-q", WHEEL_NUMPY])
        ready.touch()
    run([vpy, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", "--no-index",
         "--find-links", dist, "s3dlio"])  # fmt: skip
    return vpy


def smoke(vpy: pathlib.Path) -> str:
    """Run the smoke check with the venv's python, outside the repository; its last line."""
    with tempfile.TemporaryDirectory(prefix="s3dlio-wheel-") as scratch:
        # -I: neither the script's directory nor PYTHONPATH may supply s3dlio.
        out = subprocess.run(
            [vpy, "-I", SMOKE, scratch], cwd=scratch, capture_output=True, text=True, timeout=300
        )
    if out.returncode != 0:
        raise RuntimeError(f"smoke check with {vpy} failed:\n{out.stdout}{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def main(argv: list[str]) -> int:
    dist, work, versions = (
        pathlib.Path(argv[0]).resolve(),
        pathlib.Path(argv[1]).resolve(),
        argv[2:],
    )
    missing = []
    for version in versions:
        python = find_python(version)
        if python is None:
            missing.append(version)
            continue
        print(smoke(venv_with_wheel(python, dist, work / f"venv-{version}")))
    if missing:
        print(f"no CPython {', '.join(missing)} found here: those wheels are built, not run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
