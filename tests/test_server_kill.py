"""Real servers SIGKILLed in the middle of a save (issue 16): s3s-fs and
Azurite, each killed `KILLS` times while a checkpoint of `SIZE` bytes is
being uploaded through the seed API. Every kill must end the save with an
OSError naming the checkpoint within `FAIL_WITHIN` seconds (retries and
timeouts bounded through storage_options), and once the server is back on
the same port and data: the step committed before loads bit-exact, nothing
half-written is committed, and the same store object saves again.

Azurite keeps its blob index in memory and writes it to disk now and then,
so a crash can lose blobs it had acknowledged: that is the server's
durability, not ours. The committed step is therefore followed by a clean
restart (which saves Azurite's index) before the kill, as a real service
would have it on disk; s3s-fs writes every object to disk as it goes."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fixtures_azure as fa
import fixtures_s3 as fs
import pytest

import s3dlio

KILLS = 2
SIZE = 24 << 20
PART = 5 << 20
FAIL_WITHIN = 20.0


@dataclass
class Target:
    """A server this test may kill, and how to reach a fresh base on it."""

    base: str
    options: dict[str, str]
    kill: Callable[[], None]
    restart: Callable[[], None]
    # Make acknowledged writes durable on the server (a clean restart).
    persist: Callable[[], None]
    # Where the server keeps what it is sent: its growth shows a save's progress.
    data: pathlib.Path


def _stored(root: pathlib.Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


@contextlib.contextmanager
def _s3() -> Iterator[Target]:
    with fs.running_server("s3s-fs-kill") as server:

        def restart() -> None:
            server.start(server.port)

        options = {
            **server.options(),
            # A dead server is reported in seconds, not minutes.
            "max_attempts": "2",
            "connect_timeout": "1",
            "read_timeout": "5",
        }
        yield Target(
            f"s3://{fs.BUCKET}/{uuid.uuid4().hex}",
            options,
            server.stop,
            restart,
            lambda: None,
            server.data,
        )


@contextlib.contextmanager
def _azure() -> Iterator[Target]:
    launcher = fa.azurite_launcher()
    location = pathlib.Path(tempfile.mkdtemp(prefix="s3dlio-azurite-kill-"))
    server = fa.start_azurite(launcher, location)
    try:

        def kill() -> None:
            server.proc.kill()
            server.proc.wait()

        def restart() -> None:
            server.proc = fa.start_azurite(launcher, location, port=server.port).proc

        def persist() -> None:
            fa.stop_azurite(server.proc)
            restart()

        options = {
            "connection_string": server.connection_string,
            "max_retries": "1",
            "retry_timeout": "5",
        }
        yield Target(
            f"az://{fa.ACCOUNT}/{server.create_container()}/ck",
            options,
            kill,
            restart,
            persist,
            location,
        )
    finally:
        fa.stop_azurite(server.proc)
        shutil.rmtree(location, ignore_errors=True)


TARGETS = {"s3": _s3, "az": _azure}


class _Save(threading.Thread):
    """A save in the background, its outcome kept."""

    def __init__(self, store: s3dlio.PyCheckpointStore, step: int, data: bytes) -> None:
        super().__init__(daemon=True)
        self.store, self.step, self.data = store, step, data
        self.error: BaseException | None = None
        self.ended = 0.0

    def run(self) -> None:
        try:
            self.store.save(self.step, 0, "kill-test", self.data)
        except BaseException as e:  # noqa: BLE001 - judged by the test thread
            self.error = e
        self.ended = time.monotonic()


@pytest.mark.parametrize("backend", sorted(TARGETS))
def test_server_killed_mid_save(backend: str) -> None:
    with TARGETS[backend]() as target:
        store = s3dlio.PyCheckpointStore(
            target.base,
            part_size=PART,
            multipart_threshold=PART,
            fsync=False,
            storage_options=target.options,
        )
        committed = {1: os.urandom(SIZE)}
        began = time.monotonic()
        store.save(1, 0, "kill-test", committed[1])
        clean = time.monotonic() - began
        target.persist()
        kills = 0
        fail_times = []
        step = 2
        while kills < KILLS:
            assert step < 2 + 3 * KILLS, f"{backend}: saves ended before the kill {step - 2} times"
            data = os.urandom(SIZE)
            before = _stored(target.data)
            save = _Save(store, step, data)
            save.start()
            # Inside the upload: once the server holds a third (then two
            # thirds) of it, or after what a whole clean save took.
            want = before + SIZE * (1 + kills) // 3
            deadline = time.monotonic() + clean
            while save.is_alive() and _stored(target.data) < want:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            if not save.is_alive():
                save.join()
                committed[step] = data
                step += 1
                continue
            target.kill()
            killed = time.monotonic()
            save.join(FAIL_WITHIN + 5)
            assert not save.is_alive(), f"{backend}: still saving {FAIL_WITHIN + 5} s after kill"
            if save.error is None:
                # It had finished as the server died: committed, no kill counted.
                committed[step] = data
            else:
                err = save.error
                assert isinstance(err, OSError), f"{backend}: {err!r}"
                assert not isinstance(err, (s3dlio.IntegrityError, FileNotFoundError)), repr(err)
                assert target.base.split("/")[3] in str(err), f"{backend}: names nothing: {err}"
                fail_times.append(save.ended - killed)
                assert fail_times[-1] < FAIL_WITHIN, f"{backend}: {fail_times[-1]:.1f} s to fail"
                kills += 1
            target.restart()
            _check(store, committed, step, data, backend)
            # The same store saves again, on the same step.
            store.save(step, 0, "kill-test", data, overwrite=True)
            committed[step] = data
            assert store.load(step) == data
            target.persist()
            step += 1
        print(
            f"SERVER-KILL {backend}: {kills} kills mid-save of {SIZE >> 20} MiB, failed after "
            f"{', '.join(f'{t:.1f}' for t in fail_times)} s; {len(committed)} committed steps "
            "load bit-exact after restarts, 0 lost"
        )


def _check(
    store: s3dlio.PyCheckpointStore,
    committed: dict[int, bytes],
    step: int,
    data: bytes,
    backend: str,
) -> None:
    steps = [c.step for c in store.list_checkpoints()]
    known = sorted(committed)
    # The killed save committed or it did not; nothing else changed.
    assert steps in (known, sorted({*known, step})), f"{backend}: {steps} vs {known}"
    for s in known:
        assert store.load(s) == committed[s], f"{backend}: step {s} changed"
    if step in steps:
        assert store.load(step) == data, f"{backend}: the killed save committed other bytes"
