"""Module-level object API on the local backends: roundtrips, every
compression level, bad input and corruption."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import zstandard

import s3dlio
from conftest import flip_byte

SIZES = [0, 1, 4095, 4096, 4097, (1 << 20) + 3]


def pattern(n: int) -> bytes:
    return (np.arange(n, dtype=np.uint64) * 2654435761 % 251).astype(np.uint8).tobytes()


@pytest.mark.parametrize("size", SIZES)
def test_roundtrip_sizes(base_uri: str, size: int) -> None:
    uri = f"{base_uri}/obj-{size}.bin"
    data = pattern(size)
    meta = s3dlio.put_bytes(uri, data)
    assert meta["size"] == size and meta["codec"] == "none"
    assert s3dlio.get_bytes(uri) == data
    assert s3dlio.stat(uri)["size"] == size


@pytest.mark.parametrize("level", range(1, 23))
def test_every_compression_level_roundtrips(scratch: pathlib.Path, level: int) -> None:
    uri = f"file://{scratch}/level-{level}.zst"
    data = pattern(300_000) + bytes(200_000)
    meta = s3dlio.put_bytes(uri, data, compression_level=level)
    assert meta["codec"] == "zstd-seekable"
    assert meta["compression_level"] == level
    assert meta["stored_size"] < len(data)
    assert s3dlio.get_bytes(uri) == data
    st = s3dlio.stat(uri)
    assert st["size"] == len(data)
    assert 0 < st["ratio"] < 1


@pytest.mark.parametrize("level", [0, 23, -1, 100])
def test_bad_levels_name_the_valid_range(scratch: pathlib.Path, level: int) -> None:
    with pytest.raises(ValueError, match=rf"compression level {level} .*1-22"):
        s3dlio.put_bytes(f"file://{scratch}/x", b"data", compression_level=level)
    with pytest.raises(ValueError, match="1-22"):
        s3dlio.PyCheckpointStore(f"file://{scratch}/ck", compression_level=level)
    assert not list((scratch).iterdir())


def test_compressed_object_is_plain_zstd(scratch: pathlib.Path) -> None:
    path = scratch / "plain.zst"
    data = pattern(9_000_000)
    s3dlio.put_bytes(str(path), data, compression_level=3)
    reader = zstandard.ZstdDecompressor().stream_reader(path.read_bytes(), read_across_frames=True)
    assert reader.read() == data


def test_ranges_of_compressed_and_plain(base_uri: str) -> None:
    data = pattern(10_000_000)
    for name, level in [("plain", None), ("packed", 1)]:
        uri = f"{base_uri}/{name}"
        s3dlio.put_bytes(uri, data, compression_level=level)
        for off, n in [(0, 10), (4_194_300, 10), (9_999_990, 100), (5_000_000, 3_000_000)]:
            assert s3dlio.get_range(uri, off, n) == data[off : off + n]


def test_buffer_protocol_inputs_and_readinto(scratch: pathlib.Path) -> None:
    arr = np.arange(1000, dtype=np.float32).reshape(10, 100)
    for i, data in enumerate([bytearray(b"abc"), memoryview(b"xyz"), arr]):
        uri = f"file://{scratch}/buf-{i}"
        s3dlio.put_bytes(uri, data, compression_level=1)
        assert s3dlio.get_bytes(uri) == bytes(memoryview(data).cast("B"))
    out = np.empty_like(arr)
    assert s3dlio.read_into(f"file://{scratch}/buf-2", 0, out) == arr.nbytes
    assert np.array_equal(out, arr)
    with pytest.raises(TypeError, match="writable"):
        s3dlio.read_into(f"file://{scratch}/buf-2", 0, b"readonly")
    with pytest.raises(TypeError, match="buffer"):
        s3dlio.put_bytes(f"file://{scratch}/bad", 12345)


def test_list_stat_delete(base_uri: str) -> None:
    local_uri = base_uri
    for name in ["a/1", "a/2", "b"]:
        s3dlio.put_bytes(f"{local_uri}/{name}", b"x")
    listed = s3dlio.list(f"{local_uri}/a/")
    assert [u.rsplit("/", 2)[-2:] for u in listed] == [["a", "1"], ["a", "2"]]
    s3dlio.delete(f"{local_uri}/a/1")
    assert len(s3dlio.list(f"{local_uri}/a/")) == 1
    with pytest.raises(FileNotFoundError, match="a/1"):
        s3dlio.get_bytes(f"{local_uri}/a/1")
    with pytest.raises(FileNotFoundError):
        s3dlio.delete(f"{local_uri}/a/1")


def test_upload_download(scratch: pathlib.Path) -> None:
    src = scratch / "src.bin"
    data = pattern(20_000_000)
    src.write_bytes(data)
    meta = s3dlio.upload(str(src), f"direct://{scratch}/up.zst", compression_level=1)
    assert meta["size"] == len(data)
    assert s3dlio.download(f"direct://{scratch}/up.zst", str(scratch / "back.bin")) == len(data)
    assert (scratch / "back.bin").read_bytes() == data
    with pytest.raises(FileNotFoundError):
        s3dlio.upload(str(scratch / "missing"), f"file://{scratch}/never")
    assert not (scratch / "never").exists()


def test_corrupt_compressed_object_raises_naming_it(scratch: pathlib.Path) -> None:
    path = scratch / "rot.zst"
    noisy = np.random.default_rng(0).standard_normal(500_000).astype(np.float32)
    s3dlio.put_bytes(str(path), noisy, compression_level=3)
    flip_byte(path, 1000)
    with pytest.raises(s3dlio.IntegrityError, match="rot.zst"):
        s3dlio.get_bytes(str(path))
    with pytest.raises(s3dlio.IntegrityError, match="rot.zst"):
        s3dlio.get_range(str(path), 0, 100)


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("gs://bucket/key", "unknown scheme 'gs://'"),
        ("s3://", "missing bucket"),
        ("az://acct", "az://<account>/<container>"),
        ("", "empty URI"),
        ("file://", "empty path"),
    ],
)
def test_bad_uris(uri: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        s3dlio.put_bytes(uri, b"x")


def test_unknown_storage_option(scratch: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="unknown storage option 'colour'"):
        s3dlio.put_bytes(f"file://{scratch}/x", b"x", storage_options={"colour": "red"})


def _kernel_accepts_o_direct(directory: pathlib.Path) -> bool:
    probe = directory / f".s3dlio-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


def test_direct_refuses_tmpfs_unless_fallback_asked() -> None:
    shm = pathlib.Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this machine")
    if _kernel_accepts_o_direct(shm):
        # Linux >= 6.6 supports O_DIRECT on tmpfs; the refusal path is then
        # covered by the Rust unit tests of direct.rs with a simulated refusal.
        pytest.skip("this kernel supports O_DIRECT on tmpfs")
    import uuid

    uri = f"direct:///dev/shm/s3dlio-{uuid.uuid4().hex}"
    with pytest.raises(ValueError, match="O_DIRECT is not supported"):
        s3dlio.put_bytes(uri, b"data")
    s3dlio.put_bytes(uri, b"data", storage_options={"direct_fallback": "true"})
    try:
        assert s3dlio.get_bytes(uri, storage_options={"direct_fallback": "true"}) == b"data"
    finally:
        s3dlio.delete(uri, storage_options={"direct_fallback": "true"})
