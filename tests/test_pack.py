"""The pack layer as the adapters use it: `PackWriter.write_item` says where
each item landed as a typed `PackedItem`, and `read_items` takes typed
`ItemRead`s back."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import s3dlio
from s3dlio import _native


def test_packed_items_say_where_each_item_landed(scratch: pathlib.Path) -> None:
    floats = np.random.default_rng(3).standard_normal(300_000).astype(np.float32)
    blob = b"header bytes " * 1000
    with _native.PackWriter(f"file://{scratch}/pack.bin", compression_level=1) as writer:
        grouped = writer.write_item([floats], (0, 4))
        plain = writer.write_item([blob])
    assert isinstance(grouped, _native.PackedItem) and isinstance(plain, _native.PackedItem)
    assert (grouped.offset, grouped.size) == (0, floats.nbytes)
    assert plain.offset == grouped.length and plain.size == len(blob)
    assert grouped.grouping is not None and grouped.grouping[:3] == (0, floats.nbytes, 4)
    assert plain.grouping is None
    assert "PackedItem(offset=0" in repr(grouped)
    with pytest.raises(AttributeError):
        grouped.offset = 5  # type: ignore[misc]

    back_floats = np.empty_like(floats)
    back_blob = bytearray(len(blob))
    g, p = grouped, plain
    _native.read_items(
        f"file://{scratch}",
        [
            _native.ItemRead(
                "pack.bin", g.offset, g.length, g.grouping, g.crc32c, "floats", [back_floats]
            ),
            _native.ItemRead("pack.bin", p.offset, p.length, True, p.crc32c, "blob", [back_blob]),
        ],
    )
    assert np.array_equal(back_floats.view(np.uint32), floats.view(np.uint32))
    assert bytes(back_blob) == blob


def test_read_items_takes_typed_items_only(scratch: pathlib.Path) -> None:
    with _native.PackWriter(f"file://{scratch}/p.bin") as writer:
        placed = writer.write_item([b"abc"])
    item = _native.ItemRead("p.bin", placed.offset, placed.length, False, None, "x", [3])
    assert (item.name, item.offset, item.length, item.label) == ("p.bin", 0, 3, "x")
    _native.read_items(f"file://{scratch}", [item])
    with pytest.raises(TypeError, match="ItemRead, not tuple"):
        _native.read_items(f"file://{scratch}", [("p.bin", 0, 3, False, None, "x", [3])])
    with pytest.raises(ValueError, match="encoding must be False, True"):
        _native.ItemRead("p.bin", 0, 3, "zstd", None, "x", [3])


def test_a_wrong_crc_from_a_packed_item_is_an_integrity_error(scratch: pathlib.Path) -> None:
    data = np.arange(10_000, dtype=np.int64)
    with _native.PackWriter(f"file://{scratch}/p.bin") as writer:
        placed = writer.write_item([data])
    assert placed.crc32c is not None
    wrong = (placed.crc32c + 1) % (1 << 32)
    item = _native.ItemRead(
        "p.bin", placed.offset, placed.length, False, wrong, "ints", [np.empty_like(data)]
    )
    with pytest.raises(s3dlio.IntegrityError, match="ints"):
        _native.read_items(f"file://{scratch}", [item])
