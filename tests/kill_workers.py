"""Saving processes for the SIGKILL matrix (tests/test_kill_matrix.py).

A worker saves checkpoints in a loop (new steps, and every third save an
overwrite of the step before) and appends ``"<step> <version>"`` to a log
after each save returns, so the parent knows what was committed when it
kills the worker. Every payload encodes its (step, version) and is a pure
function of them, so what loads can be checked byte for byte."""

from __future__ import annotations

import hashlib
import os
import struct

PAYLOAD = 96 << 10


def payload(step: int, version: int) -> bytes:
    """Deterministic, mildly compressible bytes that name (step, version)."""
    seed = hashlib.sha256(f"{step}/{version}".encode()).digest()
    body = (seed * (PAYLOAD // len(seed) + 1))[:PAYLOAD]
    noise = bytes(b ^ (i & 0x0F) for i, b in enumerate(body))
    return struct.pack("<QQ", step, version) + noise


def decode_header(data: bytes) -> tuple[int, int]:
    step, version = struct.unpack("<QQ", data[:16])
    return step, version


def _log(path: str, step: int, version: int) -> None:
    # One write per line with O_APPEND: a kill never leaves half a line
    # that parses as a different step.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{step} {version}\n".encode())
    finally:
        os.close(fd)


def plan(start: int) -> list[tuple[int, int, bool]]:
    """(step, version, overwrite) of the saves a worker makes from `start`."""
    out = []
    step = start
    for i in range(1000):
        if i % 3 == 2 and step > start:
            out.append((step - 1, 1000 + i, True))
        else:
            out.append((step, 0, False))
            step += 1
    return out


def seed_worker(base: str, env: dict[str, str], start: int, log: str) -> None:
    os.environ.update(env)
    import s3dlio

    store = s3dlio.PyCheckpointStore(base, compression_level=1)
    for step, version, overwrite in plan(start):
        store.save(step, 0, "kill-test", payload(step, version), overwrite=overwrite)
        _log(log, step, version)


def dcp_state(step: int, version: int) -> dict:
    import torch

    raw = payload(step, version)
    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return {"data": t, "extra": {"step": step, "version": version}}


def dcp_worker(base: str, env: dict[str, str], start: int, log: str) -> None:
    os.environ.update(env)
    import torch.distributed.checkpoint as dcp

    from s3dlio_torch import S3DlioWriter

    for step, version, overwrite in plan(start):
        writer = S3DlioWriter(f"{base}/step-{step}", compression_level=1, overwrite=overwrite)
        dcp.save(dcp_state(step, version), storage_writer=writer)
        _log(log, step, version)
