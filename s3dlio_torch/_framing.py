"""Tensors as torch.save archives whose storage bytes go to the store
straight from the tensor's memory.

Torch's ``FileSystemWriter`` stores every tensor item as ``torch.save(t)``.
``torch.serialization.skip_data`` makes torch.save write everything but the
storage bytes and seek over them; capturing what it writes before and after
that hole gives a header and a trailer such that ``header + storage bytes +
trailer`` is the archive torch would have written (the zip CRC-32 of the
storage record is 0, as with ``skip_data``; ``torch.load`` does not check
it, and s3dlio checks a CRC32C of the whole item instead).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TensorLayout:
    """Where a tensor's storage bytes sit inside its stored item, and how
    to view them: recorded at save, used at load to read the bytes straight
    into the destination."""

    header: int
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def as_record(self) -> tuple:
        return (self.header, self.dtype, self.shape, self.stride)

    @staticmethod
    def from_record(record: tuple) -> TensorLayout:
        header, dtype, shape, stride = record
        return TensorLayout(int(header), str(dtype), tuple(shape), tuple(stride))

    @property
    def torch_dtype(self) -> torch.dtype:
        dtype = getattr(torch, self.dtype.removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown tensor dtype {self.dtype!r} in checkpoint metadata")
        return dtype

    @property
    def nbytes(self) -> int:
        numel = 1
        for n in self.shape:
            numel *= n
        return numel * self.torch_dtype.itemsize

    @property
    def row_major(self) -> bool:
        expected = 1
        for n, s in zip(reversed(self.shape), reversed(self.stride), strict=True):
            if n != 1 and s != expected:
                return False
            expected *= n
        return True


class _Capture:
    """A write-only stream keeping what torch.save writes around the
    storage bytes it skips (one seek over them)."""

    def __init__(self) -> None:
        self.parts: list[bytearray] = [bytearray()]
        self.holes: list[int] = []

    def write(self, data: bytes) -> int:
        self.parts[-1] += data
        return len(memoryview(data))

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != io.SEEK_CUR or offset < 0:
            raise io.UnsupportedOperation("only forward relative seeks are expected")
        self.holes.append(offset)
        self.parts.append(bytearray())
        return self.tell()

    def tell(self) -> int:
        return sum(len(p) for p in self.parts) + sum(self.holes)

    def flush(self) -> None:
        pass


def zero_copy_able(t: torch.Tensor) -> bool:
    """Plain dense tensors; anything else (sparse, quantized, subclasses)
    is stored with a full torch.save."""
    return (
        type(t) is torch.Tensor
        and t.layout == torch.strided
        and not t.is_quantized
        and not t.is_nested
    )


def minimal_cpu(t: torch.Tensor) -> torch.Tensor:
    """`t` on the CPU, owning a storage of exactly its bytes, as torch's
    writer prepares it (so torch.save stores no more than the tensor)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.untyped_storage().nbytes() != t.nbytes or t.storage_offset() != 0:
        t = t.clone()
    return t


Frame = tuple[bytes, bytes, TensorLayout]


class FrameCache:
    """Frames of tensors already framed in one save, by what torch.save's
    output depends on once the storage bytes are skipped: for a plain
    tensor without Python state or hooks, its pickle names only the
    dtype, shape, stride, storage offset and size, requires_grad and the
    device, and the zip records around it depend on nothing else (the data
    record's CRC-32 is 0 under ``skip_data``). A checkpoint holds many
    tensors of few shapes, and one ``torch.save`` per tensor is most of the
    Python time of a save. Thread-safe (dict operations under the GIL);
    one per save, so torch's serialization settings cannot change under it.
    """

    def __init__(self) -> None:
        self._frames: dict[tuple, Frame] = {}

    def frame(self, t: torch.Tensor) -> Frame:
        key = _frame_key(t)
        if key is None:
            return frame(t)
        hit = self._frames.get(key)
        if hit is None:
            hit = self._frames[key] = frame(t)
        return hit


def _frame_key(t: torch.Tensor) -> tuple | None:
    """What ``torch.save(t)`` writes around the storage bytes depends on,
    or None for tensors whose output may depend on more (Python state,
    hooks, conj/neg bits)."""
    if (
        type(t) is not torch.Tensor
        or t.__dict__
        or t._backward_hooks
        or t.is_conj()
        or t.is_neg()
        or any(n is not None for n in getattr(t, "names", ()))
    ):
        return None
    return (
        t.dtype,
        tuple(t.shape),
        t.stride(),
        t.storage_offset(),
        t.untyped_storage().nbytes(),
        t.requires_grad,
        str(t.device),
    )


def frame(t: torch.Tensor) -> Frame:
    """Header and trailer of ``torch.save(t)`` around its storage bytes.
    `t` comes from `minimal_cpu`."""
    capture = _Capture()
    with torch.serialization.skip_data():
        torch.save(t, capture)
    nbytes = t.untyped_storage().nbytes()
    if capture.holes == [nbytes] or (not capture.holes and nbytes == 0):
        header = bytes(capture.parts[0])
        trailer = bytes(capture.parts[1]) if capture.holes else b""
    else:
        raise RuntimeError(
            f"unexpected torch.save layout (skipped {capture.holes}, storage has {nbytes} bytes)"
        )
    layout = TensorLayout(len(header), str(t.dtype), tuple(t.shape), tuple(t.stride()))
    return header, trailer, layout


def storage_bytes(t: torch.Tensor) -> np.ndarray:
    """A writable uint8 view of `t`'s whole storage (no copy)."""
    storage = t.untyped_storage()
    flat = torch.empty(0, dtype=torch.uint8)
    flat.set_(storage, 0, (storage.nbytes(),), (1,))
    return flat.numpy()


def tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """A writable uint8 view of the bytes of contiguous CPU tensor `t`."""
    if not t.is_contiguous():
        raise ValueError("tensor_bytes needs a contiguous tensor")
    return t.reshape(-1).view(torch.uint8).numpy()


def full_save(t: torch.Tensor) -> memoryview:
    """The whole ``torch.save(t)`` archive, for tensors `zero_copy_able`
    refuses."""
    buf = io.BytesIO()
    torch.save(t, buf)
    return buf.getbuffer()
