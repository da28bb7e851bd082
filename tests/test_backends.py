"""The public API on every backend (`base_uri`: file, direct, and each
remote backend whose server fixture is available): objects, streaming
files, checkpoints and the CLI, with the same expectations everywhere."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import s3dlio
from conftest import run_cli


def pattern(n: int, seed: int = 0) -> bytes:
    """n bytes with period 251 (prime, so no part size lines up with it).
    Built without n-sized temporaries: forked children inherit this
    process's peak RSS, which other tests measure."""
    period = ((np.arange(251) * 7 + seed) % 251).astype(np.uint8)
    return np.resize(period, n).tobytes()


def test_objects(base_uri: str) -> None:
    data = pattern(3_000_003)
    uri = f"{base_uri}/dir/obj.bin"
    assert s3dlio.put_bytes(uri, data)["size"] == len(data)
    assert s3dlio.get_bytes(uri) == data
    assert s3dlio.get_range(uri, 1_000_000, 77) == data[1_000_000:1_000_077]
    assert s3dlio.stat(uri)["size"] == len(data)
    z = f"{base_uri}/dir/obj.zst"
    s3dlio.put_bytes(z, data, compression_level=3)
    assert s3dlio.get_bytes(z) == data
    assert s3dlio.get_range(z, 2_500_000, 500_003) == data[2_500_000:3_000_003]
    s3dlio.put_bytes(f"{base_uri}/other", b"not under dir/")
    assert s3dlio.list(f"{base_uri}/dir/") == [z.replace(".zst", ".bin"), z]
    s3dlio.delete(uri)
    with pytest.raises(FileNotFoundError, match="obj.bin"):
        s3dlio.get_bytes(uri)
    with pytest.raises(FileNotFoundError):
        s3dlio.delete(uri)


def test_stream_writer_publishes_on_close_only(base_uri: str) -> None:
    uri = f"{base_uri}/streamed.bin"
    parts = [pattern(1 << 20, i) for i in range(5)]
    with s3dlio.open_writer(uri) as w:
        for p in parts:
            w.write(p)
        assert s3dlio.list(f"{base_uri}/") == []
    assert s3dlio.get_bytes(uri) == b"".join(parts)
    with pytest.raises(RuntimeError), s3dlio.open_writer(f"{base_uri}/failed.bin") as w:
        w.write(parts[0])
        raise RuntimeError("caller failed mid-write")
    assert s3dlio.list(f"{base_uri}/") == [uri]


def local_dir(scratch: pathlib.Path) -> pathlib.Path:
    """Local files of a test, apart from the base URI's objects (which are
    in `scratch` itself on the local backends)."""
    d = scratch.parent / f"{scratch.name}-local"
    d.mkdir(exist_ok=True)
    return d


def test_upload_download_files(base_uri: str, scratch: pathlib.Path) -> None:
    scratch = local_dir(scratch)
    src = scratch / "src.bin"
    src.write_bytes(pattern(20_000_001, 3))
    uri = f"{base_uri}/files/big.zst"
    meta = s3dlio.upload(src, uri, compression_level=1)
    assert meta["size"] == src.stat().st_size
    back = scratch / "back.bin"
    assert s3dlio.download(uri, back) == src.stat().st_size
    assert back.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("level", [None, 3])
def test_checkpoint_store(base_uri: str, level: int | None) -> None:
    store = s3dlio.PyCheckpointStore(f"{base_uri}/run", compression_level=level)
    assert store.load_latest() is None
    data = {step: pattern(2_000_000, step) for step in (1, 2, 3)}
    for step, blob in data.items():
        store.save(step, 0, "numpy", blob, user_meta={"step": step})
    assert store.load_latest() == data[3]
    assert store.load(2) == data[2]
    assert [i.step for i in store.list_checkpoints()] == [1, 2, 3]
    with pytest.raises(FileExistsError):
        store.save(3, 0, "numpy", b"again")
    store.delete_checkpoint(3)
    assert store.load_latest() == data[2]
    out = run_cli("verify", f"{base_uri}/run", "--json")
    assert out.returncode == 0, out.stderr


def test_cli_cp_ls_stat_rm(base_uri: str, scratch: pathlib.Path) -> None:
    scratch = local_dir(scratch)
    src = scratch / "cli.bin"
    src.write_bytes(pattern(5_000_000, 9))
    dst = f"{base_uri}/cli/obj.zst"
    out = run_cli("cp", str(src), dst, "--compression-level", "3")
    assert out.returncode == 0, out.stderr
    st = json.loads(run_cli("stat", dst, "--json").stdout)
    assert st["size"] == 5_000_000 or st.get("logical_size") == 5_000_000
    listing = run_cli("ls", f"{base_uri}/cli/", "--json")
    assert listing.returncode == 0 and "obj.zst" in listing.stdout, listing.stderr
    back = scratch / "cli-back.bin"
    out = run_cli("cp", dst, str(back))
    assert out.returncode == 0, out.stderr
    assert back.read_bytes() == src.read_bytes()
    assert run_cli("rm", dst).returncode == 0
    assert s3dlio.list(f"{base_uri}/cli/") == []
    missing = run_cli("stat", f"{base_uri}/cli/nope")
    assert missing.returncode == 2 and "nope" in missing.stderr
