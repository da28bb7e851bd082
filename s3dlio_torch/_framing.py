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


def frame(t: torch.Tensor) -> tuple[bytes, bytes, TensorLayout]:
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
