"""The S3 test server: s3s-fs (its path in S3DLIO_S3S_FS, which `make test`
sets) on a free 127.0.0.1 port with fixed test credentials and a scratch
data directory, started once per session and always stopped.

`s3_base` gives every test a fresh prefix in the test bucket. The endpoint
and credentials are put into os.environ (restored afterwards), so child
processes such as the CLI reach the same server with no options."""

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

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ACCESS_KEY = "s3dlio-test-access-key"
SECRET_KEY = "s3dlio-test-secret-key-do-not-leak"
REGION = "us-east-1"
BUCKET = "s3dlio-test"


def s3s_fs_binary() -> str | None:
    """The server binary, None when S3 is not configured for this run."""
    path = os.environ.get("S3DLIO_S3S_FS")
    if not path:
        return None
    if not os.path.isfile(path):
        pytest.fail(f"S3DLIO_S3S_FS={path} does not exist; run `make tools`")
    return path


def _die_with_parent() -> None:
    # The server must not outlive pytest, even when pytest is killed.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """One s3s-fs process on a data directory; restartable on the same data."""

    def __init__(self, binary: str, data: pathlib.Path) -> None:
        self.binary = binary
        self.data = data
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> S3Server:
        """Start on `port` (a restart on the same data) or a free one."""
        # Another process may take the probed port before the server binds it.
        for _ in range(5):
            self.port = port or _free_port()
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--access-key",
                    ACCESS_KEY,
                    "--secret-key",
                    SECRET_KEY,
                    str(self.data),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            if self._wait_ready():
                return self
        raise RuntimeError("s3s-fs failed to start 5 times")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return True
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"s3s-fs did not listen on 127.0.0.1:{self.port} within 15 s")

    def stop(self) -> None:
        """SIGKILL, as a crash would; idempotent."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server through the AWS variables."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            # Keep the user's ~/.aws out of the tests.
            "AWS_CONFIG_FILE": str(self.data.parent / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.data.parent / "no-aws-credentials"),
        }

    def options(self) -> dict[str, str]:
        """The same settings as explicit storage_options."""
        return {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "region": REGION,
        }

    def client(self):  # noqa: ANN201 - boto3 clients have no importable type
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )


def scratch_dir(tag: str) -> pathlib.Path:
    """A fresh directory on the work disk (tmpfs would hold objects in RAM)."""
    base = ROOT / "target" / "pytest-scratch"
    base.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=base))


@contextlib.contextmanager
def s3_environment(server: S3Server) -> Iterator[None]:
    names = [*server.env(), "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"]
    saved = {k: os.environ.get(k) for k in names}
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(k, None)
    os.environ.update(server.env())
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def running_server(tag: str) -> Iterator[S3Server]:
    """A server of its own with the test bucket, stopped and removed after."""
    binary = s3s_fs_binary()
    if binary is None:
        pytest.skip("S3DLIO_S3S_FS is not set (`make test` sets it): S3 backend not tested")
    root = scratch_dir(tag)
    data = root / "data"
    data.mkdir()
    server = S3Server(binary, data).start()
    try:
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_server("s3s-fs") as server, s3_environment(server):
        yield server


@pytest.fixture
def s3_base(s3_server: S3Server) -> str:
    """A fresh, empty prefix in the test bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"
