"""The `s3dlio` command: ls, cp, stat, rm, info, verify, --json, exit codes."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import s3dlio
from conftest import run_cli


def test_installed_command_runs() -> None:
    # Installed beside the interpreter, whether or not the venv is on PATH.
    exe = shutil.which("s3dlio", path=str(pathlib.Path(sys.executable).parent))
    assert exe, "the wheel installs an s3dlio command"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "verify" in out.stdout


def test_cp_stat_ls_rm(scratch: pathlib.Path) -> None:
    src = scratch / "src.bin"
    src.write_bytes(bytes(3_000_000))
    dst = f"direct://{scratch}/remote/obj.zst"
    out = run_cli("cp", str(src), dst, "--compression-level", "3")
    assert out.returncode == 0, out.stderr
    st = json.loads(run_cli("stat", dst, "--json").stdout)
    assert st["size"] == 3_000_000 or st.get("logical_size") == 3_000_000
    assert "zstd" in json.dumps(st)
    listing = run_cli("ls", f"file://{scratch}/remote/", "--json")
    assert listing.returncode == 0 and "obj.zst" in listing.stdout
    back = scratch / "back.bin"
    assert run_cli("cp", dst, str(back)).returncode == 0
    assert back.read_bytes() == src.read_bytes()
    assert run_cli("rm", dst).returncode == 0
    assert s3dlio.list(f"file://{scratch}/remote/") == []


def test_bad_input_exit_codes(scratch: pathlib.Path) -> None:
    out = run_cli("stat", "gs://nope/x")
    assert out.returncode == 2 and "unknown scheme" in out.stderr
    out = run_cli("stat", f"file://{scratch}/missing")
    assert out.returncode == 2 and "missing" in out.stderr
    out = run_cli("cp", f"file://{scratch}/a", f"file://{scratch}/b", "--compression-level", "23")
    assert out.returncode == 2 and "1-22" in out.stderr
    out = run_cli("verify", f"file://{scratch}/no-checkpoints-here")
    assert out.returncode == 2
