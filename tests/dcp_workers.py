"""Rank bodies for the DCP tests: each runs in a real process of a gloo
group on 127.0.0.1 (started by `torch.multiprocessing.spawn`), and asserts
what it loads bit for bit. Kept apart from the test module so spawned
children import only this."""

from __future__ import annotations

import gc
import os
import queue
import socket
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from s3dlio_torch import S3DlioReader, S3DlioWriter

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn: Callable[..., None], world: int, *args: Any) -> None:
    """Run `fn(rank, world, *args)` in `world` fresh processes of one gloo
    group (for tests that kill a rank)."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())
    torch.multiprocessing.spawn(_enter, args=(world, fn, args), nprocs=world, join=True)


def _init(rank: int, world: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))


def _enter(rank: int, world: int, fn: Callable[..., None], args: tuple) -> None:
    _init(rank, world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


class World:
    """`size` rank processes (torch.multiprocessing's spawn context, one
    gloo group on 127.0.0.1) started once and reused: importing torch in a
    fresh process costs seconds, so tests send them jobs instead. A job is
    `fn(rank, size, *args)` run on every rank; it narrows itself to fewer
    ranks with `subgroup`."""

    def __init__(self, size: int) -> None:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(free_port())
        ctx = torch.multiprocessing.get_context("spawn")
        self.size = size
        self.jobs = [ctx.Queue() for _ in range(size)]
        self.results = ctx.Queue()
        # Not daemonic: process-mode async_save starts a child of its own.
        self.procs = [
            ctx.Process(target=_serve, args=(r, size, self.jobs[r], self.results))
            for r in range(size)
        ]
        for p in self.procs:
            p.start()

    def run(self, fn: Callable[..., None], *args: Any, timeout: float = 600) -> None:
        for q in self.jobs:
            q.put((fn, args))
        outcomes: dict[int, str | None] = {}
        deadline = time.monotonic() + timeout
        while len(outcomes) < self.size:
            try:
                rank, failure = self.results.get(timeout=2)
                outcomes[rank] = failure
            except queue.Empty:
                dead = [r for r, p in enumerate(self.procs) if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"rank processes {dead} died during {fn.__name__}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{fn.__name__} did not finish in {timeout}s") from None
        failures = {r: f for r, f in sorted(outcomes.items()) if f is not None}
        if failures:
            raise AssertionError("\n".join(f"--- rank {r} ---\n{f}" for r, f in failures.items()))

    def close(self) -> None:
        for q in self.jobs:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()


def _serve(rank: int, size: int, jobs: Any, results: Any) -> None:
    _init(rank, size)
    try:
        while (job := jobs.get()) is not None:
            fn, args = job
            try:
                fn(rank, size, *args)
                results.put((rank, None))
            except BaseException:  # noqa: BLE001 - reported to the test
                results.put((rank, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def subgroup(size: int) -> tuple[DeviceMesh, dist.ProcessGroup | None]:
    """A 1-D CPU mesh over ranks 0..size-1 and its group (None on ranks
    outside it). Every rank must call this: creating groups is collective."""
    mesh = DeviceMesh("cpu", list(range(size)))
    return mesh, mesh.get_group() if dist.get_rank() < size else None


# -- the state dict -------------------------------------------------------


def full_tensors() -> dict[str, torch.Tensor]:
    """The logical (unsharded) tensors every test saves, same on every rank."""
    g = torch.Generator().manual_seed(1234)
    return {
        "row": torch.randn(8, 6, generator=g),
        "col": torch.randn(5, 8, generator=g).to(torch.bfloat16),
        "uneven": torch.randn(7, 3, generator=g).to(torch.float16),
        "rep": torch.arange(12, dtype=torch.int64).reshape(3, 4),
        "plain": torch.randn(4, 3, generator=g).t(),  # column-major storage
        "empty": torch.empty(0, 5),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "flags": torch.tensor([True, False, True]),
        "big": torch.randn(300_000, generator=g),  # spans several read parts
    }


EXTRAS = {"step": 42, "name": "run-1", "nested": {"lr": 0.125, "betas": [0.9, 0.99]}}


def placements(variant: int) -> dict[str, list]:
    """How each tensor is laid out: `variant` 1 reshards differently."""
    if variant == 0:
        return {
            "row": [Shard(0)],
            "col": [Shard(1)],
            "uneven": [Shard(0)],
            "rep": [Replicate()],
            "big": [Shard(0)],
        }
    return {
        "row": [Shard(1)],
        "col": [Shard(0)],
        "uneven": [Shard(1)],
        "rep": [Shard(0)],
        "big": [Replicate()],
    }


def build(mesh: DeviceMesh, variant: int, zero: bool) -> dict[str, Any]:
    """One rank's state dict: DTensors on `mesh` where `placements` says
    so. With `zero`, every tensor is zero (a destination to load into)."""
    lay = placements(variant)
    sd: dict[str, Any] = {}
    for name, t in full_tensors().items():
        if zero:
            t = torch.zeros_like(t)
        sd[name] = distribute_tensor(t, mesh, lay[name]) if name in lay else t
    sd["extras"] = (
        {"step": 0, "name": "", "nested": {"lr": 0.0, "betas": [0.0, 0.0]}} if zero else EXTRAS
    )
    return sd


def check(sd: dict[str, Any]) -> None:
    """Every tensor equals the saved one bit for bit, dtype included."""
    for name, want in full_tensors().items():
        got = sd[name]
        if isinstance(got, DTensor):
            got = got.full_tensor()
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        assert torch.equal(got, want), f"{name} differs after restore"
    assert sd["extras"] == EXTRAS, sd["extras"]


# -- jobs --------------------------------------------------------------------

SIZES = (4, 2, 1)


def heap_given_back() -> None:
    """Every rank's writer or reader unfroze the heap it froze (the last
    hook differs between the coordinator and the others)."""
    assert gc.get_freeze_count() == 0, f"{gc.get_freeze_count()} objects left frozen"


def roundtrip(
    rank: int, world: int, base: str, level: int | None, byte_grouping: bool | None = None
) -> None:
    """Save with 4, 2 and 1 ranks; load each checkpoint with 4, 2 and 1
    ranks, laid out differently from how it was saved (resharding)."""
    meshes = {k: subgroup(k) for k in SIZES if k <= world}
    for saver, (mesh, pg) in meshes.items():
        uri = f"{base}/saved-by-{saver}"
        if rank < saver:
            writer = S3DlioWriter(
                uri, compression_level=level, byte_grouping=byte_grouping, thread_count=2
            )
            dcp.save(build(mesh, saver % 2, zero=False), storage_writer=writer, process_group=pg)
            heap_given_back()
        dist.barrier()
        for loader, (lmesh, lpg) in meshes.items():
            if rank < loader:
                out = build(lmesh, 1 - saver % 2, zero=True)
                reader = S3DlioReader(uri, thread_count=3)
                dcp.load(out, storage_reader=reader, process_group=lpg)
                heap_given_back()
                check(out)
            dist.barrier()


def save_on(rank: int, world: int, uri: str, size: int) -> None:
    mesh, pg = subgroup(size)
    if rank < size:
        dcp.save(build(mesh, 0, zero=False), storage_writer=S3DlioWriter(uri), process_group=pg)


class DieMidSave(DefaultSavePlanner):
    """Kills the last rank abruptly in the middle of its items, once rank 0
    has published its data file (so the crash leaves new data next to the
    old checkpoint)."""

    def __init__(self, rank: int, world: int, uri: str, after: int) -> None:
        super().__init__()
        self.dies = rank == world - 1
        self.uri = uri
        self.before = set(_names(uri))
        self.after = after
        self.handed = 0

    def resolve_data(self, write_item: Any) -> Any:
        if self.dies and self.handed >= self.after:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(n.startswith("__0_") for n in set(_names(self.uri)) - self.before):
                    break
                time.sleep(0.05)
            os._exit(17)
        self.handed += 1
        return super().resolve_data(write_item)


def save_then_die(rank: int, world: int, uri: str) -> None:
    mesh, _ = subgroup(world)
    sd = build(mesh, 0, zero=False)
    for name in ("row", "plain", "big"):
        sd[name] = sd[name] * 2
    dcp.save(
        sd,
        storage_writer=S3DlioWriter(uri, overwrite=True, thread_count=1),
        planner=DieMidSave(rank, world, uri, after=2),
    )


def model_optimizer_and_async(rank: int, world: int, base: str) -> None:
    """On two ranks: get_state_dict/set_state_dict (model + optimizer),
    async_save in thread and process mode, use_collectives=False."""
    _, pg = subgroup(2)
    if rank < 2:
        _model_optimizer_and_async(rank, 2, base, pg)


def _model_optimizer_and_async(rank: int, world: int, base: str, pg: dist.ProcessGroup) -> None:
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType

    def make() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)
        )
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
        return model, opt

    model, opt = make()
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 16)).square().sum().backward()
        opt.step()
    msd, osd = get_state_dict(model, opt)
    want_m = {k: v.clone() for k, v in msd.items()}
    want_exp = [s["exp_avg"].clone() for s in opt.state.values()]

    def restore(uri: str) -> None:
        model2, opt2 = make()
        m2, o2 = get_state_dict(model2, opt2)
        state = {"model": m2, "optim": o2}
        dcp.load(state, storage_reader=S3DlioReader(uri), process_group=pg)
        set_state_dict(
            model2, opt2, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        for k, v in model2.state_dict().items():
            assert torch.equal(v, want_m[k]), k
        got_exp = [s["exp_avg"] for s in opt2.state.values()]
        assert len(got_exp) == len(want_exp)
        for a, b in zip(got_exp, want_exp, strict=True):
            assert torch.equal(a, b)
        assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]

    state = {"model": msd, "optim": osd}
    dcp.save(
        state, storage_writer=S3DlioWriter(f"{base}/sync", compression_level=1), process_group=pg
    )
    restore(f"{base}/sync")

    for kind in (AsyncCheckpointerType.THREAD, AsyncCheckpointerType.PROCESS):
        uri = f"{base}/async-{kind.value}"
        fut = dcp.async_save(
            state, storage_writer=S3DlioWriter(uri), async_checkpointer_type=kind, process_group=pg
        )
        fut.result(timeout=300)
        heap_given_back()
        restore(uri)
        # The future reports a failed save: the checkpoint exists now.
        fut = dcp.async_save(
            state, storage_writer=S3DlioWriter(uri), async_checkpointer_type=kind, process_group=pg
        )
        try:
            fut.result(timeout=300)
        except BaseException as e:  # noqa: BLE001 - CheckpointException is a BaseException
            assert "already exists" in str(e), str(e)
        else:
            raise AssertionError(f"{kind}: second async_save to {uri} did not fail")
        heap_given_back()

    # Without collectives: rank-local metadata, unique file names per rank.
    uri = f"{base}/local"
    dcp.save(state, storage_writer=S3DlioWriter(uri), use_collectives=False, process_group=pg)
    heap_given_back()
    dist.barrier(group=pg)
    names = [n for n in _names(uri) if n.endswith(".distcp")]
    assert all(n.startswith(tuple(f"__{r}_" for r in range(world))) for n in names), names
    assert {n[: n.index("_", 2)] for n in names} == {f"__{r}" for r in range(world)}, names
    restore(uri)


def _names(uri: str) -> list[str]:
    import s3dlio

    prefix = uri.rstrip("/") + "/"
    return [u[len(prefix) :] for u in s3dlio.list(prefix)]
