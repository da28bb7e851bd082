"""Test servers for benchmarks that need one (S3, Azure).

A bench script that needs servers says so on a line of its own:

    # bench-needs: s3, azure

and bench/report.py starts each named server (through STARTERS below)
before running the script, passes what the starter yields (endpoint,
credentials) to the script as environment variables, and stops the server
afterwards, also when the script fails. The S3 and Azure backends add their
starters here, reusing their pytest fixtures' logic (free 127.0.0.1 port,
readiness wait, teardown); until a starter exists, scripts that need it are
reported as skipped with the reason.

What each starter puts into the script's environment:

- ``s3``: s3s-fs with the AWS variables (``AWS_ENDPOINT_URL_S3``, keys,
  region) and ``S3DLIO_BENCH_S3_BUCKET``, a bucket that already exists.
- ``azure``: Azurite with ``AZURE_STORAGE_CONNECTION_STRING`` and
  ``S3DLIO_BENCH_AZ_CONTAINER``, a container that already exists, in account
  ``S3DLIO_BENCH_AZ_ACCOUNT``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from _common import AZURE_PID_ENV, S3_PID_ENV

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("S3DLIO_TOOLS", Path.home() / ".cache/s3dlio/tools"))
# The pytest fixtures own the start/readiness/teardown logic; reuse it.
sys.path.insert(0, str(ROOT / "tests"))

BENCH_BUCKET = "s3dlio-bench"
BENCH_CONTAINER = "s3dlio-bench"


def _tool(env_name: str, default: Path) -> str:
    path = os.environ.get(env_name) or str(default)
    if not os.path.exists(path):
        raise Unavailable(f"{env_name}: {path} does not exist (run `make tools`)")
    return path


def _scratch(tag: str) -> Path:
    # On the work disk, beside the other bench scratch files: s3s-fs and
    # Azurite keep objects as files, and tmpfs would hold them in RAM.
    base = ROOT / "bench" / "out"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=base))


@contextmanager
def _s3() -> Iterator[dict[str, str]]:
    from fixtures_s3 import S3Server

    binary = _tool("S3DLIO_S3S_FS", TOOLS / "s3s-fs-0.14.1/bin/s3s-fs")
    root = _scratch("s3s-fs")
    data = root / "data"
    data.mkdir()
    server = S3Server(binary, data).start()
    try:
        server.client().create_bucket(Bucket=BENCH_BUCKET)
        assert server.proc is not None
        yield {
            **server.env(),
            "S3DLIO_BENCH_S3_BUCKET": BENCH_BUCKET,
            # For scripts that measure the server's CPU time too.
            S3_PID_ENV: str(server.proc.pid),
        }
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _azure() -> Iterator[dict[str, str]]:
    from fixtures_azure import ACCOUNT, ENV, start_azurite, stop_azurite

    launcher = _tool("S3DLIO_AZURITE", TOOLS / "azurite-3.37.0/node_modules/.bin/azurite-blob")
    location = _scratch("azurite")
    server = start_azurite(launcher, location)
    try:
        server.create_container(BENCH_CONTAINER)
        yield {
            ENV: server.connection_string,
            "S3DLIO_BENCH_AZ_CONTAINER": BENCH_CONTAINER,
            "S3DLIO_BENCH_AZ_ACCOUNT": ACCOUNT,
            AZURE_PID_ENV: str(server.proc.pid),
        }
    finally:
        stop_azurite(server.proc)
        shutil.rmtree(location, ignore_errors=True)


@contextmanager
def _cuda() -> Iterator[dict[str, str]]:
    """Not a server: a CUDA device, without which bench_gpu.py has nothing
    to measure (asked in a child so this process never initialises CUDA)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, torch; sys.exit(not torch.cuda.is_available())"],
        capture_output=True,
    )
    if probe.returncode != 0:
        raise Unavailable("no CUDA device on this machine")
    yield {}


# name -> () -> context manager yielding environment variables for the script
STARTERS: dict[str, Callable[[], AbstractContextManager[dict[str, str]]]] = {
    "s3": _s3,
    "azure": _azure,
    "cuda": _cuda,
}

_NEEDS = re.compile(r"^#\s*bench-needs:\s*(.+)$", re.MULTILINE)


def needs(script: Path) -> list[str]:
    """The servers `script` declares with `# bench-needs: a, b`."""
    match = _NEEDS.search(script.read_text())
    if not match:
        return []
    return [name.strip() for name in match.group(1).split(",") if name.strip()]


class Unavailable(Exception):
    """A needed server has no starter (yet)."""


@contextmanager
def started(names: list[str]) -> Iterator[dict[str, str]]:
    """Start every server in `names`; yield their merged environment."""
    missing = [n for n in names if n not in STARTERS]
    if missing:
        raise Unavailable(
            f"no starter for {', '.join(missing)} in bench/_servers.py (it lands with that backend)"
        )
    env: dict[str, str] = {}
    with ExitStack() as stack:
        for name in names:
            env.update(stack.enter_context(STARTERS[name]()))
        yield env
