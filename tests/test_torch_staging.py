"""Saves from device memory: tensors copied to the host ahead of the writer
(s3dlio_torch/_staging.py), within a byte budget, in order, bit-exactly.

No GPU here: CPU tensors are routed through the staging copy
(`_staging._STAGE_CPU`), which exercises the look-ahead, the budget and the
writer's use of the copies; the CUDA copy itself runs in
test_torch_dcp.py's CUDA tests and bench/gpu_check.sh on a GPU machine.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from s3dlio_torch import S3DlioReader, S3DlioWriter, _staging

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MIB = 1 << 20


@pytest.fixture
def stage_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_staging, "_STAGE_CPU", True)


def tensors(n: int, size: int = MIB) -> list[torch.Tensor]:
    return [torch.full((size // 4,), float(i)) for i in range(n)]


def run(items: list[Any], budget: int) -> tuple[list[tuple[Any, Any]], list[int]]:
    """What `staged` yields, and how many items were resolved at each yield."""
    resolved: list[Any] = []

    def resolve(item: Any) -> Any:
        resolved.append(item)
        return item

    out, counts = [], []
    for pair in _staging.staged(items, resolve, budget):
        counts.append(len(resolved))
        out.append(pair)
    return out, counts


def test_device_tensors_are_copied_ahead_up_to_the_budget(stage_cpu: None) -> None:
    items = tensors(10)
    out, counts = run(items, budget=3 * MIB)
    # Three 1 MiB copies in flight before the first is handed over, then
    # one more each time the writer moves on: never more than the budget.
    assert counts == [min(10, i + 3) for i in range(10)]
    for original, (item, host) in zip(items, out, strict=True):
        assert item is original
        assert torch.equal(host, original)
        assert host.untyped_storage().data_ptr() != original.untyped_storage().data_ptr()


def test_a_tensor_larger_than_the_budget_is_copied_alone(stage_cpu: None) -> None:
    items = tensors(3, size=4 * MIB)
    out, counts = run(items, budget=MIB)
    assert counts == [1, 2, 3]
    assert all(torch.equal(h, t) for (t, h) in zip(items, [h for _, h in out], strict=True))


def test_views_are_copied_into_storages_of_their_own_bytes(stage_cpu: None) -> None:
    base = torch.arange(4096, dtype=torch.float32).reshape(64, 64)
    views = [base[8:24], base.t(), base[:, 3]]
    out, _ = run(views, budget=MIB)
    for view, (_, host) in zip(views, out, strict=True):
        assert torch.equal(host, view)
        assert host.untyped_storage().nbytes() == view.nbytes


def test_host_data_is_resolved_one_item_at_a_time_and_not_copied() -> None:
    # Without device tensors nothing runs ahead: resolving a bytes item may
    # serialise a whole object, so it happens only when the writer gets there.
    items: list[Any] = [*tensors(3), io.BytesIO(b"blob"), *tensors(2)]
    out, counts = run(items, budget=64 * MIB)
    assert counts == [1, 2, 3, 4, 5, 6]
    assert all(data is item for item, data in out)


def test_a_non_tensor_item_stops_the_look_ahead(stage_cpu: None) -> None:
    items: list[Any] = [*tensors(2), io.BytesIO(b"blob"), *tensors(2)]
    _, counts = run(items, budget=64 * MIB)
    assert counts == [3, 3, 3, 5, 5]


@pytest.mark.parametrize("level", [None, 1], ids=["plain", "zstd"])
def test_staged_saves_load_bit_exactly(stage_cpu: None, scratch, level) -> None:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(300, 257, generator=g)
    state: dict[str, Any] = {
        "fp32": base,
        "bf16": base.to(torch.bfloat16),
        "transposed": base.t(),
        "rows": base[100:140],
        "ints": torch.arange(10_000),
        "extras": {"step": 9},
    }
    path = scratch / "staged"
    writer = S3DlioWriter(str(path), compression_level=level, thread_count=2)
    dcp.save(state, storage_writer=writer, no_dist=True)
    readers = [S3DlioReader(str(path))] + ([dcp.FileSystemReader(path)] if level is None else [])
    for reader in readers:
        got: dict[str, Any] = {k: torch.zeros_like(v) for k, v in state.items() if k != "extras"}
        got["extras"] = {"step": 0}
        dcp.load(got, storage_reader=reader, no_dist=True)
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(got[k], v), k
        assert got["extras"] == {"step": 9}
