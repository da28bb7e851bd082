"""S3DlioWriter / S3DlioReader keep Python's cyclic garbage collector off
the older heap (gc.freeze) while torch plans a save or load between their
hooks, and always give it back (gc.unfreeze): after the operation, after a
failure in their own hooks or in torch's; a collector the caller disabled
or a heap the caller froze is left alone."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner

from s3dlio_torch import S3DlioReader, S3DlioWriter

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def frozen() -> bool:
    return gc.get_freeze_count() > 0


class Watching:
    """Mixed into torch's default planners: notes whether the heap is
    frozen in the planning steps that run between the storage hooks, and
    fails the last one when asked."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.seen: list[bool] = []

    def create_global_plan(self, plans: list[Any]) -> Any:
        self.seen.append(frozen())
        return super().create_global_plan(plans)  # type: ignore[misc]

    def finish_plan(self, plan: Any) -> Any:
        self.seen.append(frozen())
        if self.fail:
            raise RuntimeError("planner failed on purpose")
        return super().finish_plan(plan)  # type: ignore[misc]


class SaveWatcher(Watching, DefaultSavePlanner):
    pass


class LoadWatcher(Watching, DefaultLoadPlanner):
    pass


@pytest.fixture(autouse=True)
def collector_back_on() -> Iterator[None]:
    """A failing test must not leave the rest of the run with a frozen heap
    or no collector."""
    assert gc.isenabled() and not frozen()
    yield
    gc.unfreeze()
    gc.enable()


def state() -> dict[str, Any]:
    return {f"t{i}": torch.full((64,), float(i)) for i in range(20)} | {"step": 7}


def save(writer: S3DlioWriter, planner: DefaultSavePlanner) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state(), storage_writer=writer, planner=planner)


def load(reader: S3DlioReader, planner: DefaultLoadPlanner) -> dict[str, Any]:
    out = {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else 0 for k, v in state().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(out, storage_reader=reader, planner=planner)
    return out


def save_failing_in_torch(writer: S3DlioWriter) -> None:
    """A save that fails in torch's planning, between two writer hooks."""
    failing = SaveWatcher(fail=True)
    try:
        save(writer, failing)
    except BaseException as e:  # torch wraps it in CheckpointException
        assert "planner failed on purpose" in repr(e) + repr(getattr(e, "failures", ""))
    else:
        pytest.fail("the planner's failure did not reach the caller")
    assert failing.seen == [True, True]


def test_heap_is_frozen_while_torch_plans_and_given_back_after(scratch) -> None:
    uri = f"file://{scratch}/ckpt"
    saving = SaveWatcher()
    save(S3DlioWriter(uri), saving)
    assert saving.seen == [True, True]
    assert not frozen()

    loading = LoadWatcher()
    got = load(S3DlioReader(uri), loading)
    assert loading.seen == [True, True]
    assert not frozen()
    assert all(torch.equal(got[k], v) for k, v in state().items() if k != "step")

    # freeze_gc=False leaves the heap alone throughout.
    saving, loading = SaveWatcher(), LoadWatcher()
    save(S3DlioWriter(uri, overwrite=True, freeze_gc=False), saving)
    load(S3DlioReader(uri, freeze_gc=False), loading)
    assert saving.seen == [False, False] and loading.seen == [False, False]
    with pytest.raises(ValueError, match="freeze_gc must be True or False, got 'no'"):
        S3DlioWriter(uri, freeze_gc="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="freeze_gc must be True or False"):
        S3DlioReader(uri, freeze_gc=1)  # type: ignore[arg-type]


def test_a_disabled_collector_or_a_heap_the_caller_froze_is_left_alone(scratch) -> None:
    uri = f"file://{scratch}/ckpt"
    writer = S3DlioWriter(uri, overwrite=True)
    saving = SaveWatcher()
    save(writer, saving)
    assert saving.seen == [True, True]

    gc.disable()
    saving = SaveWatcher()
    save(writer, saving)
    assert saving.seen == [False, False] and not gc.isenabled()
    gc.enable()

    # Unfreezing it would hand the caller's frozen objects back.
    gc.freeze()
    save(writer, SaveWatcher())
    load(S3DlioReader(uri), LoadWatcher())
    assert frozen()


def test_failures_give_the_collector_back(scratch) -> None:
    uri = f"file://{scratch}/ckpt"
    # In the writer's own hook: an existing checkpoint refused.
    save(S3DlioWriter(uri), SaveWatcher())
    with pytest.raises(BaseException, match="already exists"):
        save(S3DlioWriter(uri), SaveWatcher())
    assert not frozen()

    # In torch, between two hooks: the freeze lasts until the writer starts
    # its next save...
    writer = S3DlioWriter(uri, overwrite=True)
    save_failing_in_torch(writer)
    assert frozen()
    save(writer, SaveWatcher())
    assert not frozen()

    # ... or until the writer is collected: torch's failure path keeps it
    # in a reference cycle, which the collector, still running, frees.
    writer = S3DlioWriter(uri, overwrite=True)
    save_failing_in_torch(writer)
    assert frozen()
    del writer
    gc.collect()
    assert not frozen()
