"""Device tensors copied to host memory ahead of the writer (saves from CUDA).

Torch's writer, like a plain ``.cpu()``, copies one device tensor at a time
into pageable memory and waits for each copy before writing it. Here each
data file's thread issues the copies of its upcoming tensors at once, as
non-blocking copies into pinned host memory with one CUDA event each, and
hands the writer a host tensor only when its own copy has finished: the
copies of the next items run while the current one is written, and nothing
waits for the whole device. At most ``budget`` bytes are copied ahead of the
writer per thread (one larger tensor alone may exceed it), so host memory
stays bounded. Pinned blocks come from torch's caching host allocator, which
hands freed blocks back to the next copies, save after save.

Host tensors pass through untouched. The look-ahead and budget logic runs
in the CPU tests by treating CPU tensors as device tensors
(``_STAGE_CPU``); the CUDA copy and its speed are unmeasured until
``bench/gpu_check.sh`` runs on a GPU machine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import torch

from s3dlio_torch import _framing

Item = TypeVar("Item")

# Bytes each data file's thread copies ahead of what it is writing.
BUDGET_BYTES = 256 << 20
# Tests set this to route CPU tensors through the staging copy (no pinning).
_STAGE_CPU = False
# What `next` returns once the items run out.
_END: Any = object()


class _Fence(Protocol):
    def synchronize(self) -> None: ...


def _needs_staging(data: Any) -> bool:
    if not isinstance(data, torch.Tensor):
        return False
    t = data.detach()
    on_device = t.device.type != "cpu" or _STAGE_CPU
    # Conjugate/negative views and tensors torch.save must store whole keep
    # the writer's own path (`_framing.minimal_cpu` / `full_save`).
    return on_device and _framing.zero_copy_able(t) and not t.is_conj() and not t.is_neg()


def _copy_to_host(t: torch.Tensor) -> tuple[torch.Tensor, _Fence | None]:
    """A host tensor of `t`'s values whose storage is exactly its bytes (so
    the writer stores it without another copy), and the event to wait on
    before reading it (None when the copy is already done)."""
    t = t.detach()
    if t.device.type == "cuda":
        # empty_like keeps the strides of a dense tensor, and allocates a
        # storage of just its bytes even when `t` views a larger one.
        host = torch.empty_like(t, device="cpu", pin_memory=True)
        host.copy_(t, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(t.device))
        return host, event
    host = torch.empty_like(t, device="cpu")
    host.copy_(t)
    return host, None


def staged(
    items: Iterable[Item], resolve: Callable[[Item], Any], budget: int = BUDGET_BYTES
) -> Iterator[tuple[Item, Any]]:
    """`(item, data)` for each item in order, `data = resolve(item)` with
    device tensors replaced by host copies made ahead of the caller.

    Copies are issued while less than `budget` bytes are in flight (always
    at least the next item), before the caller gets the oldest one; an item
    counts against the budget until the caller asks for the item after it.
    Items that need no copy are resolved one at a time, when reached, as
    without staging: resolving may build a whole object's bytes.
    """
    ahead: deque[tuple[Item, Any, _Fence | None, int]] = deque()
    in_flight = 0
    source = iter(items)
    more = True
    while True:
        while more and (not ahead or (in_flight < budget and ahead[-1][3] > 0)):
            item = next(source, _END)
            if item is _END:
                more = False
                break
            data = resolve(item)  # type: ignore[arg-type]
            fence: _Fence | None = None
            size = 0
            if _needs_staging(data):
                size = data.nbytes
                data, fence = _copy_to_host(data)
            ahead.append((item, data, fence, size))  # type: ignore[arg-type]
            in_flight += size
        if not ahead:
            return
        item, data, fence, size = ahead.popleft()
        if fence is not None:
            fence.synchronize()
        yield item, data
        in_flight -= size
