"""The host copy `dcp.async_save` writes from, kept from save to save.

`dcp.async_save(state, storage_writer=S3DlioWriter(...))` first copies the
state dict to host memory (the "staged" copy training may not touch), and
the caller is blocked for that copy. Left to torch, a writer that is not an
`AsyncStager` gets a stager made for that one call: fresh pageable memory
for every tensor, every save (a page fault per 4 KiB before a byte lands;
from CUDA, a copy that waits for each tensor). `S3DlioWriter.stage` uses the
process's `Staging` instead: torch's own `StateDictStager` (its walk for
DTensor, ShardedTensor and other objects, a quicker one of ours for dicts,
lists and plain tensors; storages shared between tensors staged once),
whose host storages are kept for the same source storages of the next
save, whichever writer makes it. Device copies are issued non-blocking and
waited for once, per device, at the end.

Reuse never touches a copy still being written: a save that starts while an
earlier one still holds its staged storages (their C++ reference counts say
so) gets storages of its own, and the earlier ones are freed when that save
lets go of them. In process mode torch moves the staged storages into shared
memory to send them to the checkpoint process; a staged set that went that
way is not reused either, so such saves cost what torch's default does.

Host storages of device tensors are pinned (registered with CUDA, exact
sizes) once a staged set is reused, not at its first save: a set that a
process-mode save moves away is then never pinned for nothing.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import torch
import torch.cuda._pin_memory_utils as pin_memory_utils
from torch.distributed.checkpoint._state_dict_stager import StateDictStager
from torch.storage import UntypedStorage

log = logging.getLogger(__name__)


class _KeptStager(StateDictStager):
    """torch's stager with a quicker walk through what state dicts are made
    of (dicts, lists, plain tensors), noting the devices it copied from.
    torch's generic deep copy costs ~75 µs per tensor (a no_grad context
    per level, weak references, a storage copy's slow path for small
    ones), this one ~30 µs: time the caller is blocked, a second per
    13,000 tensors of optimizer state in torch's walk. Everything else
    (tuples, DTensor, ShardedTensor, tensors carrying attributes, other
    objects) still takes torch's walk, sharing its memo, so a storage is
    staged once either way."""

    def __init__(self) -> None:
        # Pinning is ours (`Staging._pin`): torch's would pin at the first save.
        super().__init__(pin_memory=False, share_memory=False)
        self.devices: set[torch.device] = set()
        # Cleared when the driver refuses to pin (`Staging._pin`).
        self.pinning = True

    def stage(self, state_dict: Any, non_blocking: bool = False) -> Any:
        memo: dict[int, Any] = {}
        # Source storages seen, alive until the walk ends: the memo is keyed
        # by their ids.
        self._seen: list[UntypedStorage] = []
        with torch.no_grad():
            try:
                return self._walk(state_dict, memo, non_blocking)
            finally:
                self._seen = []

    def _walk(self, x: Any, memo: dict[int, Any], non_blocking: bool) -> Any:
        cls = type(x)
        if cls is dict:
            return {
                self._walk(k, memo, non_blocking): self._walk(v, memo, non_blocking)
                for k, v in x.items()
            }
        if cls is list:
            return [self._walk(v, memo, non_blocking) for v in x]
        if cls is torch.Tensor and not x.__dict__ and x.data_ptr() != 0:
            return self._plain_tensor(x, memo, non_blocking)
        if cls in (str, int, float, bool) or x is None:
            return x
        return self.deepcopy_with_tensor_offload(x, memo, non_blocking=non_blocking)

    def _plain_tensor(self, x: torch.Tensor, memo: dict[int, Any], non_blocking: bool) -> Any:
        done = memo.get(id(x))
        if done is not None:
            return done
        storage = x.untyped_storage()
        host = memo.get(id(storage))
        # The tensor is its whole storage: copied as the tensor below (one
        # copy, no byte views). A conjugate or negative view reads its
        # storage through a flag, so its bytes are copied as stored and the
        # view keeps the flag.
        whole = (
            host is None
            and x.storage_offset() == 0
            and x.nbytes == storage.nbytes()
            and x.is_contiguous()
            and not (x.is_conj() or x.is_neg())
        )
        if host is None:
            host = (
                self._host_for(storage)
                if whole
                else self._stage_untyped_storage(storage, non_blocking=non_blocking)
            )
            memo[id(storage)] = host
            self._seen.append(storage)
        y = torch.empty(0, dtype=x.dtype).set_(host, x.storage_offset(), x.size(), x.stride())
        if whole:
            y.copy_(x, non_blocking=non_blocking)
        if x.is_conj():
            y = y.conj()
        if x.is_neg():
            y = y._neg_view()
        memo[id(x)] = y
        return y

    def _host_for(self, storage: UntypedStorage) -> UntypedStorage:
        """The kept host storage for `storage` (new if none fits)."""
        if storage.device.type == "cuda":
            self.devices.add(storage.device)
        host = self._cached_storage_mapping.get(storage)
        if host is None or host.nbytes() != storage.nbytes():
            host = torch.empty(storage.nbytes(), dtype=torch.uint8).untyped_storage()
            self._cached_storage_mapping[storage] = host
        return host

    def _stage_untyped_storage(
        self, storage: UntypedStorage, non_blocking: bool = False
    ) -> UntypedStorage:
        # torch's walk (DTensor, attributes, ...) and views: a byte copy.
        host = self._host_for(storage)
        _as_bytes(host).copy_(_as_bytes(storage), non_blocking=non_blocking)
        return host

    def staged_storages(self) -> list[tuple[UntypedStorage, UntypedStorage]]:
        """(source, host copy) of every storage kept for the next save."""
        return list(self._cached_storage_mapping.items())


def _as_bytes(storage: UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def _held_elsewhere(host: UntypedStorage) -> bool:
    # One reference is the stager's own; any other is a staged tensor (or a
    # view of one) that a save has not let go of yet.
    return torch._C._storage_Use_Count(host._cdata) > 1 or host.is_shared()


class Staging:
    """Host copies of state dicts for `dcp.async_save`, reused from save to
    save while nothing holds the previous ones (one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stager: _KeptStager | None = None

    def stage(self, state_dict: Any) -> Any:
        """A copy of `state_dict` in host memory, every device copy done."""
        with self._lock:
            stager = self._stager
            if stager is None or any(_held_elsewhere(h) for _, h in stager.staged_storages()):
                stager = self._stager = _KeptStager()
            else:
                self._pin(stager)
            stager.devices.clear()
            staged = stager.stage(state_dict, non_blocking=True)
            for device in stager.devices:
                torch.cuda.synchronize(device)
            return staged

    def release(self) -> None:
        """Let the kept copies go (freed once no save holds them); the next
        save allocates again."""
        with self._lock:
            self._stager = None

    @staticmethod
    def _pin(stager: _KeptStager) -> None:
        if not stager.pinning:
            return
        for source, host in stager.staged_storages():
            if source.device.type != "cuda" or host.nbytes() == 0 or host.is_pinned():
                continue
            try:
                pin_memory_utils.pin_memory(host.data_ptr(), host.nbytes())
            except RuntimeError as e:
                # Pinning only speeds the copy up: where the driver refuses
                # (locked-memory limits), the copies stay pageable, said once.
                stager.pinning = False
                log.warning("async_save staging stays in pageable memory: %s", e)
                return
            # Unregistered when the storage goes, not after CUDA is torn down.
            done = weakref.finalize(host, pin_memory_utils.unpin_memory, host.data_ptr())
            done.atexit = False


STAGING = Staging()
