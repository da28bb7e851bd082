"""Keeps Python's cyclic garbage collector off the objects that existed
before a DCP save or load, while it runs on this rank.

torch's planning allocates several container objects per item (write and
read items, chunk metadata, the pickled copies of every rank's plan the
coordinator gathers, the results it gathers back). With a few thousand
tensors that is hundreds of thousands of objects living until the
operation ends, and CPython's thresholds answer them with two to four full
collections per save, each walking the whole heap of a process that holds
torch and a model (0.1-0.3 s each on the bench's 2-core machine, a fifth
of a 2 GiB save). `gc.freeze()` moves the objects already there out of
the collector's reach, so the collections during the operation walk only
what it allocated; `gc.unfreeze()` hands them back afterwards. Nothing is
collected later than it would have been except cycles among those older
objects that became garbage during the operation. torch turns the
collector off around ``get_state_dict`` and in its async checkpoint
process for the same reason; freezing instead of disabling keeps the
collector running, so garbage made meanwhile (by a failed save, by the
training loop beside an async save) is still collected.

The freeze is taken in the operation's first storage hook and given back
in this rank's last one, in any of our hooks that fails, and, should torch
fail between two hooks, when the writer or reader starts its next
operation or is collected. A collector the caller disabled, or a heap
someone else already froze, is left alone.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import weakref
from collections.abc import Iterator


class GcFreeze:
    """One writer's or reader's freeze of the heap (at most one)."""

    def __init__(self) -> None:
        self._held = False
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    # A pickled writer or reader (torch's async checkpoint process gets
    # one) starts without a freeze.
    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()

    def hold(self, owner: object) -> None:
        with self._lock:
            if self._held or not gc.isenabled() or gc.get_freeze_count():
                return
            gc.freeze()
            self._held = True
            if self._finalizer is None:
                # An operation that failed inside torch, between our hooks,
                # gives the heap back when its writer or reader is dropped
                # (torch's failure path holds it in a reference cycle, which
                # the still-running collector frees).
                self._finalizer = weakref.finalize(owner, self.release)

    def begin(self, owner: object, wanted: bool) -> None:
        """The first hook of an operation: a freeze left by an earlier one
        that failed inside torch is given back first."""
        self.release()
        if wanted:
            self.hold(owner)

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                gc.unfreeze()

    @contextlib.contextmanager
    def released_on_failure(self) -> Iterator[None]:
        """Gives the heap back if the block raises anything (torch's own
        `CheckpointException` is a BaseException)."""
        try:
            yield
        except BaseException:
            self.release()
            raise

    @contextlib.contextmanager
    def held_during(self, owner: object, wanted: bool = True) -> Iterator[None]:
        """Freezes the heap for one block, when `wanted` and not already
        held."""
        if not wanted or self._held:
            yield
            return
        self.hold(owner)
        try:
            yield
        finally:
            self.release()
