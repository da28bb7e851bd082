"""s3:// against a real s3s-fs: storage_options, the errors users meet (bad
credentials, missing bucket, unreachable endpoint), 0-byte objects, unusual
keys, corruption, a server killed mid-upload, fork, the CLI, and a >1 GiB
object streamed in and out with bounded memory."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import s3dlio
from conftest import BUCKET, SECRET_KEY, S3Server, run_cli, running_server, scratch_dir


def weights(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def test_storage_options_alone_reach_the_server(
    s3_server: S3Server, s3_base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in s3_server.env():
        monkeypatch.delenv(name, raising=False)
    opts = {**s3_server.options(), "addressing_style": "path", "max_concurrency": "4"}
    uri = f"{s3_base}/explicit.bin"
    s3dlio.put_bytes(uri, b"configured explicitly", storage_options=opts)
    assert s3dlio.get_bytes(uri, storage_options=opts) == b"configured explicitly"
    assert s3dlio.stat(uri, storage_options=opts)["size"] == 21
    store = s3dlio.PyCheckpointStore(f"{s3_base}/ck", storage_options=opts)
    store.save(1, 0, "t", b"abc")
    assert store.load_latest() == b"abc"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"colour": "red"}, "unknown storage option 'colour'.*endpoint_url"),
        ({"endpoint_url": "localhost:9000"}, "must start with http:// or https://"),
        ({"aws_access_key_id": "id"}, "must be given together"),
        ({"addressing_style": "sideways"}, "'auto', 'path' or 'virtual'"),
        ({"max_attempts": "0"}, "positive integer"),
        ({"connect_timeout": "soon"}, "seconds"),
    ],
)
def test_bad_storage_options_are_value_errors(options: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        s3dlio.put_bytes("s3://bucket/key", b"x", storage_options=options)


def test_wrong_credentials_are_permission_errors_without_the_secret(
    s3_server: S3Server, s3_base: str
) -> None:
    wrong = "wrong-secret-that-must-not-leak"
    cases = [
        {**s3_server.options(), "aws_secret_access_key": wrong},
        {**s3_server.options(), "aws_access_key_id": "AKIDNOSUCHKEY"},
    ]
    for opts in cases:
        with pytest.raises(PermissionError) as err:
            s3dlio.put_bytes(f"{s3_base}/denied", b"x", storage_options=opts)
        msg = str(err.value)
        assert s3_base in msg and "credentials" in msg
        assert wrong not in msg and SECRET_KEY not in msg
        with pytest.raises(PermissionError):
            s3dlio.get_bytes(f"{s3_base}/denied", storage_options=opts)
        store = s3dlio.PyCheckpointStore(f"{s3_base}/ck", storage_options=opts)
        with pytest.raises(PermissionError):
            store.save(1, 0, "t", b"x")
        with pytest.raises(PermissionError):
            store.list_checkpoints()
    assert s3dlio.list(f"{s3_base}/") == []


def test_missing_bucket_is_file_not_found_naming_it(s3_server: S3Server) -> None:
    uri = "s3://s3dlio-no-such-bucket/run/obj"
    named = r"bucket 's3dlio-no-such-bucket' does not exist"
    with pytest.raises(FileNotFoundError, match=named):
        s3dlio.get_bytes(uri)
    with pytest.raises(FileNotFoundError, match=named):
        s3dlio.stat(uri)
    with pytest.raises(FileNotFoundError, match=named):
        s3dlio.list("s3://s3dlio-no-such-bucket/run/")
    with pytest.raises(FileNotFoundError, match=named):
        s3dlio.PyCheckpointStore("s3://s3dlio-no-such-bucket/run").load_latest()
    out = run_cli("ls", "s3://s3dlio-no-such-bucket/run/")
    assert out.returncode == 2 and "s3dlio-no-such-bucket" in out.stderr


def test_unreachable_endpoint_fails_fast_after_bounded_retries() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    opts = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "aws_access_key_id": "id",
        "aws_secret_access_key": "secret-value",
        "max_attempts": "2",
        "connect_timeout": "1",
    }
    started = time.monotonic()
    with pytest.raises(OSError) as err:
        s3dlio.get_bytes("s3://bucket/some/key", storage_options=opts)
    assert time.monotonic() - started < 20
    assert type(err.value) is OSError, "neither missing nor forbidden: unreachable"
    msg = str(err.value)
    assert "s3://bucket/some/key" in msg and "could not be reached" in msg
    assert "secret-value" not in msg


@pytest.mark.parametrize("level", [None, 3])
def test_zero_byte_objects(s3_base: str, level: int | None, scratch: pathlib.Path) -> None:
    uri = f"{s3_base}/empty"
    meta = s3dlio.put_bytes(uri, b"", compression_level=level)
    assert meta["size"] == 0
    assert s3dlio.get_bytes(uri) == b""
    assert s3dlio.get_range(uri, 0, 10) == b""
    assert s3dlio.stat(uri)["size"] == 0
    assert s3dlio.read_into(uri, 0, bytearray()) == 0
    assert s3dlio.download(uri, str(scratch / "empty")) == 0
    assert (scratch / "empty").read_bytes() == b""
    store = s3dlio.PyCheckpointStore(f"{s3_base}/ck", compression_level=level)
    store.save(1, 0, "t", b"")
    assert store.load_latest() == b""


def test_keys_with_spaces_and_unicode(s3_base: str) -> None:
    base = f"{s3_base}/dir with space/ünïcødé 检查点"
    s3dlio.put_bytes(f"{base}/obj +%?#.bin", b"odd key")
    assert s3dlio.get_bytes(f"{base}/obj +%?#.bin") == b"odd key"
    assert s3dlio.list(f"{s3_base}/dir with space/") == [f"{base}/obj +%?#.bin"]
    store = s3dlio.PyCheckpointStore(f"{base}/run", compression_level=1)
    store.save(3, 0, "t", weights(1000))
    assert store.load(3) == weights(1000).tobytes()
    listing = run_cli("ls", f"{s3_base}/dir with space/", "--json")
    assert listing.returncode == 0, listing.stderr
    assert "检查点" in listing.stdout
    s3dlio.delete(f"{base}/obj +%?#.bin")
    with pytest.raises(FileNotFoundError, match="检查点"):
        s3dlio.get_bytes(f"{base}/obj +%?#.bin")


@pytest.mark.parametrize("level", [None, 3])
def test_corrupt_shard_on_s3_is_caught(s3_server: S3Server, s3_base: str, level: int | None):
    store = s3dlio.PyCheckpointStore(f"{s3_base}/rot", compression_level=level)
    store.save(1, 0, "t", weights(500_000))
    client = s3_server.client()
    prefix = s3_base.removeprefix(f"s3://{BUCKET}/")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    shard = next(k for k in keys if "/rank-" in k)
    body = bytearray(client.get_object(Bucket=BUCKET, Key=shard)["Body"].read())
    body[4321] ^= 0xFF
    client.put_object(Bucket=BUCKET, Key=shard, Body=bytes(body))
    name = shard.rsplit("/", 1)[-1]
    with pytest.raises(s3dlio.IntegrityError, match=name):
        store.load(1)
    with pytest.raises(s3dlio.IntegrityError, match=name):
        store.reader().read_shard(1, 0)
    assert name in store.reader().verify(1)[0]["error"]
    out = run_cli("verify", f"{s3_base}/rot", "--json")
    assert out.returncode == 1 and name in out.stdout


def test_server_killed_mid_multipart_upload_keeps_previous_checkpoint() -> None:
    with running_server("crash") as server:
        opts = {**server.options(), "max_attempts": "2", "connect_timeout": "1"}
        base = f"s3://{BUCKET}/run"
        store = s3dlio.PyCheckpointStore(
            base, multipart_threshold=5 << 20, part_size=5 << 20, storage_options=opts
        )
        good = weights(3 << 20, 1)  # 12 MiB: itself a multipart upload
        store.save(1, 0, "t", good)
        stream = store.writer(1, 0).get_distributed_shard_stream(2, 0, "t")
        chunk = weights(2 << 20, 2)  # 8 MiB
        with pytest.raises(OSError) as err:
            for i in range(64):
                if i == 3:  # parts are on the wire: crash the server
                    server.stop()
                stream.write_chunk(chunk)
            stream.finalize()
        msg = str(err.value)
        assert base in msg and "part" in msg, msg
        # Same data, new process and port: only the first checkpoint exists.
        server.start()
        opts = {**server.options()}
        store = s3dlio.PyCheckpointStore(base, storage_options=opts)
        assert [i.step for i in store.list_checkpoints()] == [1]
        assert store.load_latest() == good.tobytes()
        listed = s3dlio.list(f"{base}/", storage_options=opts)
        assert listed and all("step-000000000002" not in u for u in listed), listed


def test_fork_after_use_gets_a_fresh_client(s3_base: str) -> None:
    uri = f"{s3_base}/forked"
    s3dlio.put_bytes(uri + "/parent", b"from parent", compression_level=1)
    pid = os.fork()
    if pid == 0:  # child: the client and its connection pool must not be inherited
        try:
            ok = s3dlio.get_bytes(uri + "/parent") == b"from parent"
            s3dlio.put_bytes(uri + "/child", b"from child", compression_level=1)
            os._exit(0 if ok else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert s3dlio.get_bytes(uri + "/child") == b"from child"


def test_cli_on_s3(s3_base: str, scratch: pathlib.Path) -> None:
    src = scratch / "src.bin"
    src.write_bytes(weights(750_000).tobytes())
    dst = f"{s3_base}/remote/obj.zst"
    out = run_cli("cp", str(src), dst, "--compression-level", "3")
    assert out.returncode == 0, out.stderr
    st = json.loads(run_cli("stat", dst, "--json").stdout)
    assert 3_000_000 in (st.get("size"), st.get("logical_size")) and "zstd" in json.dumps(st)
    listing = run_cli("ls", f"{s3_base}/remote/", "--json")
    assert listing.returncode == 0 and "obj.zst" in listing.stdout
    back = scratch / "back.bin"
    assert run_cli("cp", dst, str(back)).returncode == 0
    assert back.read_bytes() == src.read_bytes()
    assert run_cli("rm", dst).returncode == 0
    assert s3dlio.list(f"{s3_base}/remote/") == []
    out = run_cli("stat", dst)
    assert out.returncode == 2 and "obj.zst" in out.stderr

    ck = f"{s3_base}/ck"
    s3dlio.PyCheckpointStore(ck, compression_level=1).save(4, 1, "t", bytes(1_000_000))
    assert run_cli("verify", ck).returncode == 0
    info = run_cli("info", ck, "--json")
    assert info.returncode == 0, info.stderr
    assert "ratio" in info.stdout


BIG_IO = textwrap.dedent(
    """
    import sys, s3dlio
    src, uri, back = sys.argv[1:4]
    up = s3dlio.upload(src, uri)
    down = s3dlio.download(uri, back)
    # VmHWM, not ru_maxrss: the latter keeps the pytest parent's peak across exec.
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(up["size"], down, hwm.split()[1])
    """
)


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def test_object_over_one_gib_streams_in_and_out_with_bounded_rss(s3_base: str) -> None:
    total = (1 << 30) + (5 << 20) + 3
    work = scratch_dir("big")
    try:
        src, back = work / "src.bin", work / "back.bin"
        block = np.random.default_rng(7).integers(0, 255, 16 << 20, dtype=np.uint8)
        with open(src, "wb") as f:
            left, i = total, 0
            while left:
                piece = block[: min(left, len(block))].copy()
                piece[:8] = np.frombuffer(i.to_bytes(8, "little"), dtype=np.uint8)
                f.write(piece.tobytes())
                left -= len(piece)
                i += 1
        uri = f"{s3_base}/big.bin"
        out = subprocess.run(
            [sys.executable, "-c", BIG_IO, str(src), uri, str(back)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr
        up, down, peak_kib = (int(x) for x in out.stdout.split())
        assert up == down == total
        assert s3dlio.stat(uri)["size"] == total
        assert _sha256(back) == _sha256(src)
        assert peak_kib < 512 * 1024, f"peak RSS {peak_kib // 1024} MiB for a 1 GiB object"
        s3dlio.delete(uri)
    finally:
        shutil.rmtree(work, ignore_errors=True)
