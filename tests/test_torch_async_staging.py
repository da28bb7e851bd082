"""`dcp.async_save` through S3DlioWriter's staging (s3dlio_torch/_async_staging.py):
host copies kept from save to save, never reused while a save still writes
from them or after they went to another process, each checkpoint holding
the values of its own call.

No GPU here: the pinning of reused copies of device tensors runs in the
CUDA test below on a GPU machine (bench/gpu_check.sh).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.staging import AsyncStager

from s3dlio_torch import S3DlioReader, S3DlioWriter, _async_staging

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def state(fill: float) -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(256, 512, generator=g) + fill
    return {
        "weight": weight,
        "bias": torch.full((512,), fill, dtype=torch.bfloat16),
        "tied": weight[:4],  # a view: its storage is staged once
        "optim": {"step": torch.tensor(int(fill)), "lr": 0.1, "moments": [weight * 2, weight * 3]},
        "epoch": int(fill),
    }


def snapshot(sd: dict[str, Any]) -> dict[str, Any]:
    return {
        "weight": sd["weight"].clone(),
        "bias": sd["bias"].clone(),
        "step": sd["optim"]["step"].clone(),
        "moments": [m.clone() for m in sd["optim"]["moments"]],
        "epoch": sd["epoch"],
    }


def train_step(sd: dict[str, Any]) -> None:
    """What training does to the state between saves: in place."""
    sd["weight"].add_(1.0)
    sd["bias"].add_(1.0)
    sd["optim"]["step"].add_(1)
    for m in sd["optim"]["moments"]:
        m.mul_(-1.0)
    sd["epoch"] += 1


def check_loaded(uri: str, want: dict[str, Any]) -> None:
    got = state(0.0)
    # Load targets must not overlap: the tied view gets memory of its own.
    got["tied"] = got["tied"].clone()
    for t in [got["tied"], *tensors(got)]:
        t.zero_()
    dcp.load(got, storage_reader=S3DlioReader(uri), no_dist=True)
    assert torch.equal(got["weight"], want["weight"])
    assert torch.equal(got["tied"], want["weight"][:4])
    assert torch.equal(got["bias"], want["bias"])
    assert torch.equal(got["optim"]["step"], want["step"])
    for a, b in zip(got["optim"]["moments"], want["moments"], strict=True):
        assert torch.equal(a, b)
    assert got["epoch"] == want["epoch"]


def host_pointers() -> set[int]:
    stager = _async_staging.STAGING._stager
    assert stager is not None
    return {host.data_ptr() for _, host in stager.staged_storages()}


def tensors(sd: dict[str, Any]) -> list[torch.Tensor]:
    """The tensors of `state` with storages of their own."""
    return [sd["weight"], sd["bias"], sd["optim"]["step"], *sd["optim"]["moments"]]


def storage_at(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def pointers(staged: dict[str, Any]) -> set[int]:
    return {storage_at(t) for t in tensors(staged)}


def test_the_writer_stages_for_async_save() -> None:
    writer = S3DlioWriter("memory://staging/w")
    assert isinstance(writer, AsyncStager)
    # The copy is finished when `stage` returns: torch has nothing to wait on.
    assert writer.should_synchronize_after_execute is False


def test_async_saves_reuse_the_host_copy_and_keep_each_checkpoints_values(scratch) -> None:
    sd = state(1.0)
    first, second = f"file://{scratch}/a1", f"file://{scratch}/a2"
    dcp.async_save(sd, storage_writer=S3DlioWriter(first), no_dist=True).result()
    want_first = snapshot(sd)
    kept = host_pointers()
    train_step(sd)
    dcp.async_save(sd, storage_writer=S3DlioWriter(second), no_dist=True).result()
    # Another writer, the same host memory: nothing allocated or faulted in.
    assert host_pointers() == kept
    check_loaded(first, want_first)
    check_loaded(second, snapshot(sd))


def test_a_copy_still_held_is_not_reused() -> None:
    sd = state(2.0)
    writer = S3DlioWriter("memory://staging/held")
    held = writer.stage(sd)
    before = snapshot(sd)
    train_step(sd)
    fresh = writer.stage(sd)
    assert not pointers(held) & pointers(fresh)
    assert torch.equal(held["weight"], before["weight"])
    assert torch.equal(held["optim"]["moments"][1], before["moments"][1])
    assert held["epoch"] == before["epoch"] and fresh["epoch"] == sd["epoch"]
    assert torch.equal(fresh["weight"], sd["weight"])
    # Staged once per storage: the view shares the weight's host copy.
    assert storage_at(fresh["tied"]) == storage_at(fresh["weight"])
    # Once nothing holds them, the newest copies are the ones reused.
    newest = pointers(fresh)
    del held, fresh
    again = writer.stage(sd)
    assert pointers(again) == newest


def test_every_kind_of_entry_is_staged_exactly_and_storages_once() -> None:
    # Dicts, lists and plain tensors take our walk; the rest torch's, with
    # one memo: a storage reached both ways is still copied once.
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    tagged = torch.randn(5)
    tagged.note = "kept"
    sd: dict[str, Any] = {
        "base": base,
        "transposed": base.t(),
        "offset": base[2:],
        "strided": base[:, ::2],
        "param": torch.nn.Parameter(torch.randn(3)),
        "in_tuple": (base, torch.ones(2, dtype=torch.int64)),
        "tagged": tagged,
        "empty": torch.empty(0, 4),
        "nested": [{"x": torch.tensor(True)}, "text", None, 1.5],
        "complex": (c := torch.randn(4, dtype=torch.complex64)),
        "conj": c.conj(),
        "neg_conj": c.conj().imag,  # a negative view of c's storage
        7: torch.full((2,), 7.0),
    }
    staged = S3DlioWriter("memory://staging/kinds").stage(sd)
    for key in ("base", "transposed", "offset", "strided", "empty"):
        got, want = staged[key], sd[key]
        assert got.device.type == "cpu" and got.stride() == want.stride(), key
        assert torch.equal(got, want), key
    # A tensor of its values, as torch's own stager gives for a Parameter.
    assert torch.equal(staged["param"], sd["param"])
    assert torch.equal(staged["in_tuple"][0], base) and torch.equal(
        staged["in_tuple"][1], sd["in_tuple"][1]
    )
    assert staged["tagged"].note == "kept" and torch.equal(staged["tagged"], tagged)
    assert staged["nested"][1:] == ["text", None, 1.5] and bool(staged["nested"][0]["x"])
    assert torch.equal(staged[7], sd[7])
    for key in ("complex", "conj", "neg_conj"):
        assert staged[key].is_conj() == sd[key].is_conj(), key
        assert torch.equal(
            staged[key].resolve_conj().resolve_neg(), sd[key].resolve_conj().resolve_neg()
        ), key
    assert storage_at(staged["conj"]) == storage_at(staged["complex"])
    views = [staged[k] for k in ("base", "transposed", "offset", "strided")] + [
        staged["in_tuple"][0]
    ]
    assert len({storage_at(v) for v in views}) == 1
    assert storage_at(staged["base"]) != storage_at(base)
    # A copy, not the source: training may write the source now.
    base.add_(100.0)
    assert staged["base"][0, 0].item() == 0.0


def test_a_copy_sent_to_another_process_is_not_reused() -> None:
    # Process mode pickles the staged tensors, which moves their storages
    # into shared memory the checkpoint process reads: such a set is left
    # to that process, never written over by the next save. (Process-mode
    # async saves end to end, on two ranks: dcp_workers.py.)
    sd = state(3.0)
    writer = S3DlioWriter("memory://staging/shared")
    sent = writer.stage(sd)
    for t in (sent["weight"], sent["bias"]):
        t.untyped_storage().share_memory_()
    moved = pointers(sent)
    del sent
    assert not pointers(writer.stage(sd)) & moved


def test_close_lets_the_kept_copies_go() -> None:
    sd = state(6.0)
    writer = S3DlioWriter("memory://staging/close")
    kept = pointers(writer.stage(sd))
    assert pointers(writer.stage(sd)) == kept
    writer.close()
    assert _async_staging.STAGING._stager is None
    # Freed (no save held them), so the next copy may land anywhere, the
    # old addresses included: what shows is a stager made afresh.
    writer.stage(sd)
    assert _async_staging.STAGING._stager is not None


def test_a_driver_refusing_to_pin_leaves_the_copies_pageable(monkeypatch, caplog) -> None:
    # Pinning only speeds device copies up: refused (locked-memory limits
    # in a container), the save goes on unpinned and says so once.
    calls: list[int] = []

    def refuse(ptr: int, size: int) -> None:
        calls.append(size)
        raise RuntimeError("cudaHostRegister failed: operation not permitted")

    class DeviceStorage:
        device = torch.device("cuda", 0)

    stager = _async_staging._KeptStager()
    hosts = [torch.empty(64, dtype=torch.uint8).untyped_storage() for _ in range(2)]
    monkeypatch.setattr(stager, "staged_storages", lambda: [(DeviceStorage(), h) for h in hosts])
    monkeypatch.setattr(_async_staging.pin_memory_utils, "pin_memory", refuse)
    with caplog.at_level("WARNING", logger="s3dlio_torch._async_staging"):
        _async_staging.Staging._pin(stager)
        _async_staging.Staging._pin(stager)
    assert calls == [64] and stager.pinning is False
    assert [r.getMessage() for r in caplog.records] == [
        "async_save staging stays in pageable memory: "
        "cudaHostRegister failed: operation not permitted"
    ]


class HeldWriter(S3DlioWriter):
    """Writes only once `go` is set: a save still in flight."""

    def __init__(self, path: str, go: threading.Event) -> None:
        super().__init__(path)
        self.go = go

    def write_data(self, plan: Any, planner: Any) -> Any:
        assert self.go.wait(60), "the test never let the save go on"
        return super().write_data(plan, planner)

    def __reduce__(self) -> Any:  # thread mode only: the event is not picklable
        raise TypeError("HeldWriter is for thread mode")


def test_a_save_in_flight_keeps_its_values_while_the_next_one_stages(scratch) -> None:
    sd = state(4.0)
    first, second = f"file://{scratch}/f1", f"file://{scratch}/f2"
    go = threading.Event()
    try:
        pending = dcp.async_save(sd, storage_writer=HeldWriter(first, go), no_dist=True)
        want_first = snapshot(sd)
        train_step(sd)
        done = dcp.async_save(sd, storage_writer=S3DlioWriter(second), no_dist=True)
        done.result(timeout=120)
    finally:
        go.set()
    pending.result(timeout=120)
    check_loaded(first, want_first)
    check_loaded(second, snapshot(sd))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_state_is_staged_pinned_once_reused_and_saved_exactly(scratch) -> None:
    sd = {
        "w": torch.randn(1024, 1024, device="cuda"),
        "b": torch.randn(1024, device="cuda").to(torch.bfloat16),
        "step": 7,
    }
    writer = S3DlioWriter(f"file://{scratch}/cuda-staged")
    writer.close()  # a set of this process's own, whatever earlier tests kept
    first = writer.stage(sd)
    assert first["w"].device.type == "cpu" and torch.equal(first["w"], sd["w"].cpu())
    del first
    sd["w"].add_(1.0)
    second = writer.stage(sd)
    assert second["w"].is_pinned() and second["b"].is_pinned()
    assert torch.equal(second["w"], sd["w"].cpu()) and torch.equal(second["b"], sd["b"].cpu())
    del second
    uri = f"file://{scratch}/cuda-async"
    dcp.async_save(sd, storage_writer=S3DlioWriter(uri), no_dist=True).result(timeout=300)
    got = {"w": torch.zeros_like(sd["w"]), "b": torch.zeros_like(sd["b"]), "step": 0}
    dcp.load(got, storage_reader=S3DlioReader(uri), no_dist=True)
    assert torch.equal(got["w"], sd["w"]) and torch.equal(got["b"], sd["b"]) and got["step"] == 7
