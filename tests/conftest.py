"""Shared fixtures: scratch locations on the work disk (O_DIRECT needs a real
filesystem, not tmpfs), each cloud backend behind a request-counting relay,
and helpers to corrupt stored bytes."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fixtures_s3 import (  # noqa: F401 - fixtures for every module, helpers for test_s3
    BUCKET,
    SECRET_KEY,
    S3Server,
    running_server,
    s3_base,
    s3_server,
    scratch_dir,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "s3dlio._cli"]


def is_tmpfs(path: pathlib.Path) -> bool:
    best, fstype = "", ""
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, mnt, typ = line.split()[:3]
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best, fstype = mnt, typ
    return fstype == "tmpfs"


@pytest.fixture
def scratch(tmp_path: pathlib.Path) -> pathlib.Path:
    if is_tmpfs(tmp_path):
        base = ROOT / "target" / "pytest-scratch"
        base.mkdir(parents=True, exist_ok=True)
        import tempfile

        return pathlib.Path(tempfile.mkdtemp(dir=base))
    return tmp_path


@pytest.fixture(params=["file", "direct"])
def local_uri(request: pytest.FixtureRequest, scratch: pathlib.Path) -> str:
    """A base URI on each local backend."""
    return f"{request.param}://{scratch}"


# Every backend a test can run on. A remote backend adds itself here and
# provides a fixture `<name>_base` returning a fresh, empty base URI (its
# server's endpoint and credentials go into os.environ, so child processes
# inherit them).
BACKENDS = ["file", "direct", "az", "s3"]  # s3_base: tests/fixtures_s3.py

# Remote backends' server fixtures (imported so pytest registers them here).
from fixtures_azure import ACCOUNT, Azurite, az_base, azurite  # noqa: E402, F401

from request_counter import CountingProxy  # noqa: E402


@pytest.fixture
def file_base(scratch: pathlib.Path) -> str:
    return f"file://{scratch}"


@pytest.fixture
def direct_base(scratch: pathlib.Path) -> str:
    return f"direct://{scratch}"


@pytest.fixture(params=BACKENDS)
def base_uri(request: pytest.FixtureRequest) -> str:
    """A fresh base URI on every backend."""
    return request.getfixturevalue(f"{request.param}_base")


def flip_byte(path: pathlib.Path, offset: int) -> None:
    """Invert one stored byte in place, as bit rot would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=os.environ.copy())


@dataclass
class Remote:
    base: str
    """A fresh, empty prefix or container."""
    opts: dict[str, str]
    """storage_options that go through `relay`."""
    secret_var: str
    """The environment variable holding the backend's credential."""
    relay: CountingProxy


@pytest.fixture(params=["s3", "az"])
def remote(request: pytest.FixtureRequest) -> Iterator[Remote]:
    """Each cloud backend's server, reached through a counting relay."""
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        base = request.getfixturevalue("s3_base")
        relay = CountingProxy(server.port)
        opts = {"endpoint_url": f"http://127.0.0.1:{relay.port}"}
        secret_var = "AWS_SECRET_ACCESS_KEY"
    else:
        azurite: Azurite = request.getfixturevalue("azurite")
        base = request.getfixturevalue("az_base")
        relay = CountingProxy(azurite.port)
        opts = {"endpoint": f"http://127.0.0.1:{relay.port}/{ACCOUNT}"}
        secret_var = "AZURE_STORAGE_CONNECTION_STRING"
    try:
        yield Remote(base, opts, secret_var, relay)
    finally:
        relay.close()
