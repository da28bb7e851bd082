"""Azurite for the pytest suite: one server per session on a free 127.0.0.1
port (`S3DLIO_AZURITE` names the `azurite-blob` launcher that `make tools`
installs), always torn down, and `az_base`: a fresh, empty container per test.

The connection string goes into os.environ, so the extension and any child
process (the CLI, spawned ranks) find the server the way users' programs
find theirs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ENV = "AZURE_STORAGE_CONNECTION_STRING"


@dataclass
class Azurite:
    port: int
    location: pathlib.Path
    proc: subprocess.Popen

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    def create_container(self, name: str | None = None) -> str:
        from azure.storage.blob import BlobServiceClient

        name = name or f"t-{uuid.uuid4().hex[:20]}"
        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)
        return name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the server goes even if pytest is killed outright.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def start_azurite(
    launcher: str,
    location: pathlib.Path,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
) -> Azurite:
    """Start azurite-blob and wait until it accepts connections; `extra_args`
    go to azurite-blob as they are (e.g. `--oauth basic --cert ...`)."""
    for _ in range(5):
        chosen = port or _free_port()
        log = open(location / "azurite.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [
                launcher,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(chosen),
                "--location",
                str(location),
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", chosen), 1):
                return Azurite(chosen, location, proc)
            if proc.poll() is not None:
                text = (location / "azurite.log").read_text(errors="replace")
                if "EADDRINUSE" in text and port is None:
                    break  # lost the port race; try another
                raise RuntimeError(f"azurite-blob exited with {proc.returncode}:\n{text}")
            time.sleep(0.05)
        else:
            stop_azurite(proc)
            raise RuntimeError(f"azurite-blob did not listen on 127.0.0.1:{chosen} in 60 s")
    raise RuntimeError("could not start azurite-blob on a free port")


def stop_azurite(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def azurite_launcher() -> str:
    launcher = os.environ.get("S3DLIO_AZURITE", "")
    if not launcher:
        pytest.skip("azure: S3DLIO_AZURITE is not set (`make test` sets it)")
    if not os.path.exists(launcher):
        pytest.fail(f"S3DLIO_AZURITE={launcher} does not exist: run `make tools`")
    return launcher


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    launcher = azurite_launcher()
    location = pathlib.Path(tempfile.mkdtemp(prefix="s3dlio-azurite-"))
    server = start_azurite(launcher, location)
    previous = os.environ.get(ENV)
    os.environ[ENV] = server.connection_string
    try:
        yield server
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        stop_azurite(server.proc)
        shutil.rmtree(location, ignore_errors=True)


@pytest.fixture
def az_base(azurite: Azurite) -> str:
    """A fresh, empty container: `az://devstoreaccount1/<container>`."""
    return f"az://{ACCOUNT}/{azurite.create_container()}"
