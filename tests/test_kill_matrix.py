"""SIGKILL of saving processes at random points, 20 per backend and per
adapter (the seed checkpoint API and torch DCP): after every kill the last
committed checkpoint loads, byte for byte, and nothing a save reported as
committed is lost.

Workers are forked from a forkserver that has torch and s3dlio imported,
so a kill-and-restart costs milliseconds, not an interpreter start. The
counts of each run go to target/reliability/ for docs/RELIABILITY.md."""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import random
import time

import kill_workers as kw
import pytest

import s3dlio

KILLS = 20
ROOT = pathlib.Path(__file__).resolve().parent.parent
COUNTS = ROOT / "target" / "reliability"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed.checkpoint", "s3dlio", "s3dlio_torch"])
    return ctx


def _remote_env() -> dict[str, str]:
    # The forkserver started before later fixtures set their servers'
    # settings: hand them to each worker.
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "AZURE_"))}


def _logged(log: pathlib.Path) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        step, version = line.split()
        out.append((int(step), int(version)))
    return out


def _in_flight(start: int, done: int) -> tuple[int, int]:
    """The save a worker was making after `done` saves from `start`."""
    step, version, _ = kw.plan(start)[done]
    return step, version


def _allowed(
    step: int,
    committed: list[tuple[int, int]],
    flight: tuple[int, int],
    killed: set[tuple[int, int]],
) -> set[int]:
    """Versions of `step` that may load: saves reported committed, the save
    in flight now, and saves in flight at earlier kills (killed after their
    commit point but before they could report it)."""
    return {v for s, v in committed if s == step} | {v for s, v in killed | {flight} if s == step}


def _check_loaded(
    step: int,
    data: bytes,
    committed: list[tuple[int, int]],
    flight: tuple[int, int],
    killed: set[tuple[int, int]],
) -> int:
    """`data` loaded for `step` is whole and one of the versions that may
    load there; returns its version."""
    got = kw.decode_header(data)
    assert data == kw.payload(*got), f"step {step}: bytes do not match their header"
    allowed = _allowed(step, committed, flight, killed)
    assert got[0] == step and got[1] in allowed, (step, got, allowed)
    return got[1]


def _check_seed(
    base: str,
    committed: list[tuple[int, int]],
    flight: tuple[int, int],
    killed: set[tuple[int, int]],
) -> int:
    """The latest step loads, is a save that committed (or one killed in
    flight), and no step reported committed is lost. Returns the latest."""
    store = s3dlio.PyCheckpointStore(base)
    latest = store.latest_step()
    if committed:
        assert latest is not None and latest >= max(s for s, _ in committed)
    if latest is None:
        return -1
    for step in {latest} | {s for s, _ in committed[-3:]}:
        version = _check_loaded(step, store.load(step), committed, flight, killed)
        newest_logged = max((v for s, v in committed if s == step), default=-1)
        # A save reported committed is never replaced by an older one.
        assert version >= newest_logged or version == flight[1], (step, version, newest_logged)
    return latest


def _check_dcp(
    base: str,
    committed: list[tuple[int, int]],
    flight: tuple[int, int],
    killed: set[tuple[int, int]],
) -> int:
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from s3dlio_torch import S3DlioReader

    steps = {s for s, _ in committed[-3:]} | {flight[0]}
    for step in sorted(steps):
        state = kw.dcp_state(0, 0)
        state["data"] = torch.zeros_like(state["data"])
        try:
            dcp.load(state, storage_reader=S3DlioReader(f"{base}/step-{step}"))
        except CheckpointException:
            # (torch's CheckpointException is a BaseException.) Only the
            # save in flight may be missing, and only if it was its first
            # version.
            assert step == flight[0] and not any(s == step for s, _ in committed), step
            continue
        _check_loaded(step, bytes(state["data"].numpy()), committed, flight, killed)
    return max((s for s, _ in committed), default=-1)


@pytest.mark.parametrize("adapter", ["seed", "dcp"])
def test_sigkill_at_random_points_never_loses_a_commit(
    base_uri: str, adapter: str, forkserver, scratch: pathlib.Path
) -> None:
    rng = random.Random(f"{base_uri.split(':')[0]}-{adapter}")
    base = f"{base_uri}/kill-{adapter}"
    target = kw.seed_worker if adapter == "seed" else kw.dcp_worker
    check = _check_seed if adapter == "seed" else _check_dcp
    env = _remote_env()
    committed: list[tuple[int, int]] = []
    killed: set[tuple[int, int]] = set()
    start = 1
    kills = mid_save = 0
    for round_ in range(KILLS):
        log = scratch / f"log-{adapter}-{round_}"
        proc = forkserver.Process(target=target, args=(base, env, start, str(log)))
        proc.start()
        # Let it save a few times, then kill it at a random moment.
        deadline = time.monotonic() + 30
        want = rng.randint(1, 3)
        while len(_logged(log)) < want and proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.08))
        assert proc.is_alive(), f"worker exited on its own ({proc.exitcode})"
        proc.kill()
        proc.join()
        kills += 1
        done = _logged(log)
        flight = _in_flight(start, len(done))
        committed += done
        latest = check(base, committed, flight, killed)
        killed.add(flight)
        mid_save += int(latest < flight[0] or len(done) < want)
        # The save killed in flight may have committed without reporting
        # it: the next worker starts past its step too.
        start = max(latest, flight[0], max((s for s, _ in committed), default=0)) + 1
    COUNTS.mkdir(parents=True, exist_ok=True)
    backend = base_uri.split("://")[0]
    (COUNTS / f"kills-{backend}-{adapter}.json").write_text(
        json.dumps(
            {
                "backend": backend,
                "adapter": adapter,
                "kills": kills,
                "commits_checked": len(committed),
                "data_lost": 0,
            }
        )
    )
