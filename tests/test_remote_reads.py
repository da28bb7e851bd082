"""What reading one object costs a cloud server, and what it checks: an
object s3dlio wrote plain is marked so in its metadata, so a read is a HEAD
and the data's ranged GETs, with no round trip to look for a seek table at
its end, and a full read is checked against the CRC32C recorded with it."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import s3dlio
from conftest import BUCKET, Remote, S3Server, flip_byte

MIB = 1 << 20


def _data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def test_a_plain_object_is_read_with_a_head_and_its_data_gets(remote: Remote) -> None:
    opts, relay = remote.opts, remote.relay
    data = _data(20 * MIB + 5, 1)
    plain, packed = f"{remote.base}/plain.bin", f"{remote.base}/packed.bin"
    s3dlio.put_bytes(plain, data, storage_options=opts)
    s3dlio.put_bytes(packed, data, compression_level=1, storage_options=opts)

    written = s3dlio.stat(plain, storage_options=opts)
    assert written["codec"] == "none" and written["crc32c"] is not None
    assert written["crc32c"] == s3dlio.put_bytes(plain, data, storage_options=opts)["crc32c"]

    relay.reset()
    out = np.empty_like(data)
    assert s3dlio.read_into(plain, 0, out, storage_options=opts) == len(data)
    assert np.array_equal(out, data)
    # Three 8 MiB pieces, and nothing else.
    assert relay.reset() == {"HEAD": 1, "GET": 3}
    assert s3dlio.get_bytes(plain, storage_options=opts) == data.tobytes()
    assert relay.reset() == {"HEAD": 1, "GET": 3}

    # A compressed object still has its seek table read first.
    assert s3dlio.get_bytes(packed, storage_options=opts) == data.tobytes()
    counts = relay.reset()
    assert counts["HEAD"] == 1 and counts["GET"] >= 2, counts


@pytest.mark.parametrize("size", [3 * MIB + 1, 70 * MIB + 3], ids=["one-put", "multipart"])
def test_a_flipped_byte_in_a_plain_s3_object_is_an_integrity_error(
    s3_server: S3Server, s3_base: str, scratch: pathlib.Path, size: int
) -> None:
    data = _data(size, 2)
    uri = f"{s3_base}/rot.bin"
    s3dlio.put_bytes(uri, data)
    key = uri.removeprefix(f"s3://{BUCKET}/")
    flip_byte(s3_server.data / BUCKET / key, size // 2)
    # The CRC32C of the whole buffer was recorded with the object, also
    # for a multipart upload (whose own checksum is composite).
    with pytest.raises(s3dlio.IntegrityError, match="rot.bin"):
        s3dlio.get_bytes(uri)
    with pytest.raises(s3dlio.IntegrityError, match="rot.bin"):
        s3dlio.read_into(uri, 0, np.empty_like(data))
    dest = scratch / "rot.bin"
    with pytest.raises(s3dlio.IntegrityError, match="rot.bin"):
        s3dlio.download(uri, str(dest))
    assert not dest.exists(), "nothing unverified becomes visible"
