"""save_numpy_array / load_numpy_array: dtype, shape and order preserved,
.npy-compatible bytes, arrays that own their memory."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import zstandard

import s3dlio

ARRAYS = {
    "f32": np.random.default_rng(1).standard_normal((64, 33)).astype(np.float32),
    "f16": np.linspace(-3, 3, 1001, dtype=np.float16),
    "i64": np.arange(-500, 500, dtype=np.int64).reshape(10, 10, 10),
    "bool": np.array([True, False, True]),
    "c64": (np.arange(6) + 1j).astype(np.complex64),
    "scalar": np.array(3.5),
    "empty": np.zeros((0, 7), dtype=np.float64),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "record": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
@pytest.mark.parametrize("level", [None, 3])
def test_roundtrip_preserves_dtype_shape_order(base_uri: str, name: str, level: int | None):
    arr = ARRAYS[name]
    uri = f"{base_uri}/{name}.npy"
    meta = s3dlio.save_numpy_array(uri, arr, compression_level=level)
    assert meta["codec"] == ("none" if level is None else "zstd-seekable")
    back = s3dlio.load_numpy_array(uri)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr)
    assert back.flags.f_contiguous == arr.flags.f_contiguous
    back[...] = back  # writable, memory is the array's own (or its base's)
    assert back.base is None or back.base.base is None or isinstance(back.base, np.ndarray)


def test_bytes_are_npy(scratch: pathlib.Path) -> None:
    arr = ARRAYS["i64"]
    s3dlio.save_numpy_array(str(scratch / "plain.npy"), arr)
    assert np.array_equal(np.load(scratch / "plain.npy"), arr)
    s3dlio.save_numpy_array(str(scratch / "packed.npy"), arr, compression_level=5)
    raw = zstandard.ZstdDecompressor().stream_reader(
        (scratch / "packed.npy").read_bytes(), read_across_frames=True
    )
    (scratch / "unpacked.npy").write_bytes(raw.read())
    assert np.array_equal(np.load(scratch / "unpacked.npy"), arr)


def test_loaded_array_outlives_everything(scratch: pathlib.Path) -> None:
    uri = f"file://{scratch}/life.npy"
    arr = np.random.default_rng(2).standard_normal(1_000_000)
    s3dlio.save_numpy_array(uri, arr, compression_level=1)
    back = s3dlio.load_numpy_array(uri)
    s3dlio.delete(uri)
    import gc

    gc.collect()
    assert np.array_equal(back, arr)


def test_rejects_objects_and_non_npy(scratch: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="Python objects"):
        s3dlio.save_numpy_array(f"file://{scratch}/o.npy", np.array([object()]))
    s3dlio.put_bytes(f"file://{scratch}/not.npy", b"definitely not numpy")
    with pytest.raises(ValueError, match="not a .npy object"):
        s3dlio.load_numpy_array(f"file://{scratch}/not.npy")


def test_truncated_npy_is_an_integrity_error(scratch: pathlib.Path) -> None:
    path = scratch / "short.npy"
    s3dlio.save_numpy_array(str(path), np.arange(1000, dtype=np.int64))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(s3dlio.IntegrityError, match="short.npy"):
        s3dlio.load_numpy_array(str(path))
