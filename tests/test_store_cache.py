"""The process-wide cache of opened cloud clients (rust/core/src/store/shared.rs),
seen from Python on s3s-fs and Azurite: one-object calls reuse one connection
pool instead of opening a connection each, while a change of credentials in
the environment still takes effect on the next call, and a forked child
works with clients of its own."""

from __future__ import annotations

import multiprocessing
import os

import pytest

import s3dlio
from conftest import Remote

N = 50


def test_one_object_calls_share_connections(remote: Remote) -> None:
    opts, relay = remote.opts, remote.relay
    uri = f"{remote.base}/small.bin"
    s3dlio.put_bytes(uri, b"x" * 100, storage_options=opts)
    for _ in range(N):
        assert s3dlio.stat(uri, storage_options=opts)["size"] == 100
        # What the JAX path objects' exists()/stat() call.
        assert s3dlio._native.head_object(uri, opts)[0] == 100
    # One store opened per call (2N + 1 opens): without the cache every
    # open is a new pool and so a new connection.
    assert relay.accepted <= 4, f"{relay.accepted} connections for {2 * N + 1} calls"
    # A stat of an object s3dlio wrote plain is one HEAD: no second HEAD,
    # no read of its tail for a seek table.
    assert relay.reset() == {"PUT (whole object)": 1, "HEAD": 2 * N}


def test_changed_credentials_take_effect_on_the_next_call(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts, secret_var = remote.opts, remote.secret_var
    uri = f"{remote.base}/creds.bin"
    s3dlio.put_bytes(uri, b"abc", storage_options=opts)
    assert s3dlio.stat(uri, storage_options=opts)["size"] == 3
    good = os.environ[secret_var]
    if secret_var == "AWS_SECRET_ACCESS_KEY":
        bad = "not-the-secret-key"
    else:
        # The same account with another (well-formed) key.
        key = good.split("AccountKey=")[1].split(";")[0]
        bad = good.replace(key, "d3Jvbmcta2V5LXdyb25nLWtleQ==")
    monkeypatch.setenv(secret_var, bad)
    with pytest.raises(PermissionError):
        s3dlio.stat(uri, storage_options=opts)
    monkeypatch.setenv(secret_var, good)
    assert s3dlio.stat(uri, storage_options=opts)["size"] == 3


def _child_stat(uri: str, opts: dict[str, str], out: multiprocessing.Queue) -> None:
    try:
        out.put(s3dlio._native.head_object(uri, opts)[0])
    except BaseException as e:  # report anything to the parent
        out.put(repr(e))


def test_a_forked_child_opens_its_own_clients(remote: Remote) -> None:
    opts = remote.opts
    uri = f"{remote.base}/fork.bin"
    s3dlio.put_bytes(uri, b"forked", storage_options=opts)
    # The parent's client (and pool) is cached before the fork.
    assert s3dlio._native.head_object(uri, opts)[0] == 6
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_stat, args=(uri, opts, out))
    child.start()
    try:
        got = out.get(timeout=60)
    finally:
        child.join(timeout=60)
    assert got == 6
    assert child.exitcode == 0
    assert s3dlio._native.head_object(uri, opts)[0] == 6
