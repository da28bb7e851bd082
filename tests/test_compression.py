"""The byte-grouping filter through the Python API: `dtype=` on the raw
calls, `byte_grouping=` on checkpoint stores, bit-exact restores of every
float width, and the cases where the filter must step aside or refuse."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import s3dlio
from conftest import flip_byte

FRAME = 4 << 20

# Bit patterns floats get wrong when anything converts them: signed zeros,
# infinities, NaNs with payloads (quiet and signalling), subnormals.
SPECIAL_BITS = {
    2: [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0x7C01, 0xFE5A, 0x0001, 0x03FF, 0x7F81, 0xFFC1],
    4: [
        0,
        0x8000_0000,
        0x7F80_0000,
        0xFF80_0000,
        0x7FC0_1234,
        0x7F80_0001,
        0xFFBF_FFFF,
        1,
        0x007F_FFFF,
    ],
    8: [
        0,
        1 << 63,
        0x7FF0 << 48,
        0xFFF0 << 48,
        0x7FF8_0000_DEAD_BEEF,
        0x7FF0_0000_0000_0001,
        1,
        (1 << 52) - 1,
    ],
}
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def weights(n: int, width: int, seed: int = 0) -> np.ndarray:
    """Weight-like values of `width` bytes (as raw bits), specials first."""
    values = np.random.default_rng(seed).standard_normal(n) * 0.02
    if width == 2:  # bf16 bits: the top half of fp32, rounded
        bits = values.astype(np.float32).view(np.uint32)
        out = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    elif width == 4:
        out = values.astype(np.float32).view(np.uint32).copy()
    else:
        out = values.view(np.uint64).copy()
    special = np.array(SPECIAL_BITS[width], dtype=UINT[width])
    out[: special.size] = special
    return out


DTYPES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_float_dtypes_roundtrip_bit_exact_and_shrink(base_uri: str, dtype: str) -> None:
    width = DTYPES[dtype]
    n = (2 * FRAME + 12_345 * 8) // width
    if dtype == "float16":
        bits = (
            (np.random.default_rng(1).standard_normal(n) * 0.02).astype(np.float16).view(np.uint16)
        )
        bits[: len(SPECIAL_BITS[2])] = SPECIAL_BITS[2]
    else:
        bits = weights(n, width, seed=width)
    grouped = s3dlio.put_bytes(f"{base_uri}/g-{dtype}.zst", bits, compression_level=1, dtype=dtype)
    plain = s3dlio.put_bytes(f"{base_uri}/p-{dtype}.zst", bits, compression_level=1)
    assert grouped["byte_group"] == width and plain["byte_group"] is None
    assert grouped["ratio"] < plain["ratio"] - 0.03, (grouped["ratio"], plain["ratio"])
    assert s3dlio.stat(f"{base_uri}/g-{dtype}.zst")["byte_group"] == width

    assert s3dlio.get_bytes(f"{base_uri}/g-{dtype}.zst") == bits.tobytes()
    out = np.empty_like(bits)
    assert s3dlio.read_into(f"{base_uri}/g-{dtype}.zst", 0, out) == bits.nbytes
    assert np.array_equal(out, bits)
    # Ranges that cut elements and cross frame boundaries.
    raw = bits.tobytes()
    for start, length in [(1, 5), (FRAME - 3, 10), (FRAME + 1, FRAME + 7), (len(raw) - 9, 50)]:
        got = s3dlio.get_range(f"{base_uri}/g-{dtype}.zst", start, length)
        assert got == raw[start : start + length]


def test_streaming_writer_with_dtype(scratch: pathlib.Path) -> None:
    bits = weights(1_500_000, 4, seed=3)
    raw = bits.tobytes()
    uri = f"file://{scratch}/s.zst"
    with s3dlio.open_writer(uri, compression_level=3, dtype=np.float32) as w:
        pos = 0
        for step in [1, 4095, 3, 1 << 20, 7, 2_000_001]:  # pieces cut elements
            w.write(raw[pos : pos + step])
            pos += step
        w.write(raw[pos:])
    assert s3dlio.stat(uri)["byte_group"] == 4
    assert s3dlio.get_bytes(uri) == raw

    # A stream that ends mid-element keeps the filter and restores exactly.
    odd = raw[: 3 * 1_000_001]
    with s3dlio.open_writer(f"file://{scratch}/odd.zst", compression_level=1, dtype="float32") as w:
        w.write(odd)
    assert s3dlio.get_bytes(f"file://{scratch}/odd.zst") == odd


def test_filter_steps_aside_where_it_does_not_apply(scratch: pathlib.Path) -> None:
    bits = weights(100_000, 4)
    # A size that is not whole elements: stored without the filter.
    meta = s3dlio.put_bytes(
        f"file://{scratch}/a.zst", bits.tobytes()[:-1], compression_level=1, dtype="float32"
    )
    assert meta["byte_group"] is None
    assert s3dlio.get_bytes(f"file://{scratch}/a.zst") == bits.tobytes()[:-1]
    # Not compressing: nothing to group.
    meta = s3dlio.put_bytes(f"file://{scratch}/b.bin", bits, dtype="float32")
    assert meta["codec"] == "none" and meta["byte_group"] is None
    # Integers, bools, complex and 1-byte types are not grouped.
    for dtype in ["int32", np.int64, "bool", "complex64", "uint8", None]:
        meta = s3dlio.put_bytes(f"file://{scratch}/c.zst", bits, compression_level=1, dtype=dtype)
        assert meta["byte_group"] is None, dtype


def test_bad_arguments_are_value_errors(scratch: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="not a dtype"):
        s3dlio.put_bytes(f"file://{scratch}/x", b"1234", compression_level=1, dtype="floaty")
    with pytest.raises(ValueError, match="compression_threads must be at least 1"):
        s3dlio.put_bytes(f"file://{scratch}/x", b"1234", compression_level=1, compression_threads=0)
    assert not (scratch / "x").exists()


def test_compression_threads_one_and_many_store_the_same_bytes(scratch: pathlib.Path) -> None:
    bits = weights(3 * FRAME // 4 + 11, 4, seed=7)
    for threads in [1, 2, 4]:
        s3dlio.put_bytes(
            f"file://{scratch}/t{threads}.zst",
            bits,
            compression_level=1,
            dtype="float32",
            compression_threads=threads,
        )
    stored = {(scratch / f"t{t}.zst").read_bytes() for t in [1, 2, 4]}
    assert len(stored) == 1


def test_upload_with_dtype(scratch: pathlib.Path) -> None:
    bits = weights(600_000, 8, seed=9)
    src = scratch / "src.bin"
    src.write_bytes(bits.tobytes())
    meta = s3dlio.upload(
        str(src), f"file://{scratch}/up.zst", compression_level=1, dtype=np.float64
    )
    assert meta["byte_group"] == 8
    s3dlio.download(f"file://{scratch}/up.zst", str(scratch / "back.bin"))
    assert (scratch / "back.bin").read_bytes() == bits.tobytes()


def test_corrupt_grouped_object_raises_naming_it(scratch: pathlib.Path) -> None:
    path = scratch / "rot.zst"
    s3dlio.put_bytes(str(path), weights(1_000_000, 4), compression_level=1, dtype="float32")
    flip_byte(path, 300_000)
    with pytest.raises(s3dlio.IntegrityError, match="rot.zst"):
        s3dlio.get_bytes(str(path))


def test_numpy_arrays_are_grouped_by_their_dtype(scratch: pathlib.Path) -> None:
    arr = np.random.default_rng(4).standard_normal((300, 301)).astype(np.float32)
    meta = s3dlio.save_numpy_array(f"file://{scratch}/a.npy", arr, compression_level=1)
    assert meta["byte_group"] == 4
    assert np.array_equal(s3dlio.load_numpy_array(f"file://{scratch}/a.npy"), arr)
    meta = s3dlio.save_numpy_array(
        f"file://{scratch}/b.npy", arr, compression_level=1, byte_grouping=False
    )
    assert meta["byte_group"] is None
    ints = np.arange(1000, dtype=np.int32)
    assert (
        s3dlio.save_numpy_array(f"file://{scratch}/c.npy", ints, compression_level=1)["byte_group"]
        is None
    )


def test_byte_group_width_is_the_cores_rule_for_every_dtype() -> None:
    # What the JAX and torch adapters ask per leaf instead of repeating it:
    # floats of 2, 4 and 8 bytes, bfloat16 included, and nothing else.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from s3dlio import _native

    grouped = {
        np.float16: 2,
        np.float32: 4,
        np.float64: 8,
        ml_dtypes.bfloat16: 2,
        "bfloat16": 2,
        "<f4": 4,
    }
    for dtype, width in grouped.items():
        assert _native.byte_group_width(dtype) == width, dtype
    for dtype in (np.int8, np.int32, np.uint16, np.bool_, np.complex64, ml_dtypes.float8_e4m3fn):
        assert _native.byte_group_width(dtype) is None, dtype
    with pytest.raises(ValueError, match="not a dtype"):
        _native.byte_group_width("no-such-dtype")


TORCH_DTYPES = """
import sys, torch, s3dlio
base = sys.argv[1]
t = torch.randn(50_000).to(torch.bfloat16)
raw = t.view(torch.int16).numpy().tobytes()
meta = s3dlio.put_bytes(f"{base}/t.zst", raw, compression_level=1, dtype=torch.bfloat16)
assert meta["byte_group"] == 2, meta
back = torch.frombuffer(bytearray(s3dlio.get_bytes(f"{base}/t.zst")), dtype=torch.bfloat16)
assert torch.equal(back.view(torch.int16), t.view(torch.int16))
meta = s3dlio.put_bytes(f"{base}/i.zst", raw, compression_level=1, dtype=torch.int16)
assert meta["byte_group"] is None, meta
# The rule the DCP writer asks per tensor, for torch's own dtypes.
from s3dlio import _native
widths = {d: _native.byte_group_width(d) for d in
          (torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int32,
           torch.bool, torch.complex64, torch.float8_e4m3fn, torch.uint8)}
assert widths == {torch.bfloat16: 2, torch.float16: 2, torch.float32: 4, torch.float64: 8,
                  torch.int32: None, torch.bool: None, torch.complex64: None,
                  torch.float8_e4m3fn: None, torch.uint8: None}, widths
print("ok")
"""


def test_torch_dtypes_are_understood(scratch: pathlib.Path) -> None:
    # In a child process: torch stays out of the test process (whose
    # children's peak RSS other tests measure).
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    out = subprocess.run(
        [sys.executable, "-c", TORCH_DTYPES, f"file://{scratch}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_checkpoint_store_byte_grouping(scratch: pathlib.Path) -> None:
    bits = weights(700_000, 2, seed=5)
    auto = s3dlio.PyCheckpointStore(f"file://{scratch}/auto", compression_level=1)
    auto.save(1, 0, "test", bits, dtype="bfloat16")
    shard = auto.reader().manifest(1)["shards"][0]
    assert shard["byte_group"] == 2
    assert auto.load(1) == bits.tobytes()
    # Without a dtype nothing is grouped, and the record has no width.
    auto.save(2, 0, "test", bits)
    assert "byte_group" not in auto.reader().manifest(2)["shards"][0]

    off = s3dlio.PyCheckpointStore(
        f"file://{scratch}/off", compression_level=1, byte_grouping=False
    )
    off.save(1, 0, "test", bits, dtype="bfloat16")
    assert "byte_group" not in off.reader().manifest(1)["shards"][0]
    assert auto.list_checkpoints()[0].ratio < off.list_checkpoints()[0].ratio

    # Multi-rank: each rank's shard with its own dtype.
    on = s3dlio.PyCheckpointStore(f"file://{scratch}/on", compression_level=3, byte_grouping=True)
    w0, w1 = on.writer(2, 0), on.writer(2, 1)
    s0 = w0.save_distributed_shard(4, 0, "test", bits, dtype="bfloat16")
    with w1.get_distributed_shard_stream(4, 0, "test", dtype="float32") as stream:
        f32 = weights(100_000, 4, seed=6)
        stream.write_chunk(f32[:33_333])
        stream.write_chunk(f32[33_333:])
        s1 = stream.finalize()
    assert (s0["byte_group"], s1["byte_group"]) == (2, 4)
    w0.finalize_distributed_checkpoint(4, 0, "test", [s0, s1])
    assert on.load(4, rank=0) == bits.tobytes() and on.load(4, rank=1) == f32.tobytes()
    assert [c["error"] for c in on.reader().verify(4)] == [None, None]


def test_checkpoint_store_explicit_grouping_refuses_what_it_cannot_do(
    scratch: pathlib.Path,
) -> None:
    with pytest.raises(ValueError, match="needs compression"):
        s3dlio.PyCheckpointStore(f"file://{scratch}/x", byte_grouping=True)
    on = s3dlio.PyCheckpointStore(f"file://{scratch}/on", compression_level=1, byte_grouping=True)
    with pytest.raises(ValueError, match="needs dtype="):
        on.save(1, 0, "test", b"abcd")
    with pytest.raises(ValueError, match="int32 is not one"):
        on.save(1, 0, "test", b"abcd", dtype="int32")
    with pytest.raises(ValueError, match="7 bytes are not a whole number of 4-byte elements"):
        on.save(1, 0, "test", b"abcdefg", dtype="float32")
    # Streams find out at the end, and publish nothing.
    stream = on.writer(1, 0).get_distributed_shard_stream(2, 0, "test", dtype="float16")
    stream.write_chunk(b"abc")
    with pytest.raises(ValueError, match="3 bytes are not a whole number of 2-byte elements"):
        stream.finalize()
    assert on.latest_step() is None
    assert not any(p.name.startswith("rank-") for p in (scratch / "on").rglob("*"))


def test_fsync_keyword_on_raw_writes(local_uri: str) -> None:
    bits = weights(200_000, 4, seed=11)
    for level in [None, 1]:
        meta = s3dlio.put_bytes(f"{local_uri}/f{level}", bits, compression_level=level, fsync=True)
        assert meta["size"] == bits.nbytes
        assert s3dlio.get_bytes(f"{local_uri}/f{level}") == bits.tobytes()
    with s3dlio.open_writer(
        f"{local_uri}/w", compression_level=1, dtype="float32", fsync=True
    ) as w:
        w.write(bits)
    assert s3dlio.get_bytes(f"{local_uri}/w") == bits.tobytes()
