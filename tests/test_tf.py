"""TensorFlow through the s3dlio filesystem plugin (real tensorflow-cpu):
checkpoints, SavedModel, TFRecord and tf.io.gfile on direct://, s3:// (s3s-fs)
and az:// (Azurite). TensorFlow imports slowly, so everything TF lives here."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
from fixtures_azure import ENV as AZURE_ENV

import s3dlio._native as native
import s3dlio_tf
from conftest import BUCKET, flip_byte
from request_counter import CountingProxy

TF_BACKENDS = ["direct", "s3", "az"]
OTHER_BUCKET = "tf-other-bucket"


@pytest.fixture(params=TF_BACKENDS)
def tf_base(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_base")


def _variables() -> dict[str, tf.Variable]:
    rng = np.random.default_rng(7)
    return {
        "w32": tf.Variable(rng.standard_normal((256, 129)).astype(np.float32)),
        "wbf16": tf.Variable(
            tf.cast(rng.standard_normal((300, 17)).astype(np.float32), tf.bfloat16)
        ),
        "step": tf.Variable(42, dtype=tf.int64),
    }


def _bits(v: tf.Variable) -> bytes:
    return tf.bitcast(v, tf.uint8).numpy().tobytes() if v.dtype.size > 1 else v.numpy().tobytes()


def test_checkpoint_roundtrip_bit_exact(tf_base):
    saved = _variables()
    path = tf.train.Checkpoint(**saved).write(f"{tf_base}/ckpt/model")
    restored = {k: tf.Variable(tf.zeros_like(v)) for k, v in saved.items()}
    tf.train.Checkpoint(**restored).read(path).assert_consumed()
    for k, v in saved.items():
        assert restored[k].dtype == v.dtype
        assert _bits(restored[k]) == _bits(v), k


def test_checkpoint_manager_keeps_two(tf_base):
    v = tf.Variable(tf.zeros((64, 64)))
    ckpt = tf.train.Checkpoint(v=v)
    mgr = tf.train.CheckpointManager(ckpt, f"{tf_base}/run", max_to_keep=2)
    for step in range(3):
        v.assign(tf.fill((64, 64), float(step)))
        mgr.save(checkpoint_number=step)
    fresh = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=tf.Variable(tf.zeros((64, 64)))), f"{tf_base}/run", max_to_keep=2
    )
    assert [p.rsplit("/", 1)[1] for p in fresh.checkpoints] == ["ckpt-1", "ckpt-2"]
    assert sorted(tf.io.gfile.glob(f"{tf_base}/run/ckpt-*.index")) == [
        f"{tf_base}/run/ckpt-1.index",
        f"{tf_base}/run/ckpt-2.index",
    ]
    target = tf.Variable(tf.zeros((64, 64)))
    tf.train.Checkpoint(v=target).restore(fresh.latest_checkpoint).assert_consumed()
    assert float(target[0, 0]) == 2.0


def test_saved_model_keras(tf_base):
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    expected = model(x).numpy()
    export = f"{tf_base}/export/1"
    model.export(export, format="tf_saved_model")
    loaded = tf.saved_model.load(export)
    np.testing.assert_array_equal(loaded.serve(x).numpy(), expected)


def test_tfrecord_write_and_read(tf_base):
    path = f"{tf_base}/data/train.tfrecord"
    records = [os.urandom(n) for n in (0, 1, 1000, 300_000)]
    with tf.io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    got = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert got == records


def test_gfile_ops_one_at_a_time(tf_base):
    g = tf.io.gfile
    d = f"{tf_base}/g"
    g.makedirs(f"{d}/sub")
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with g.GFile(f"{d}/sub/a.bin", "wb") as f:
        for i in range(0, len(payload), 1 << 20):
            f.write(payload[i : i + (1 << 20)])
    assert g.exists(f"{d}/sub/a.bin")
    assert g.stat(f"{d}/sub/a.bin").length == len(payload)
    assert g.isdir(f"{d}/sub") and not g.isdir(f"{d}/sub/a.bin")
    with g.GFile(f"{d}/sub/a.bin", "rb") as f:
        f.seek(1_000_000)
        assert f.read(5000) == payload[1_000_000:1_005_000]
        f.seek(len(payload) - 10)
        assert f.read() == payload[-10:]
    with g.GFile(f"{d}/log.txt", "w") as f:
        f.write("one\n")
    with g.GFile(f"{d}/log.txt", "a") as f:
        f.write("two\n")
    assert g.GFile(f"{d}/log.txt").read() == "one\ntwo\n"
    assert sorted(g.listdir(d)) == ["log.txt", "sub"]
    assert g.glob(f"{d}/sub/*.bin") == [f"{d}/sub/a.bin"]
    assert g.glob(f"{d}/*") == sorted([f"{d}/log.txt", f"{d}/sub"])
    g.copy(f"{d}/sub/a.bin", f"{d}/b.bin")
    g.rename(f"{d}/b.bin", f"{d}/c.bin")
    assert not g.exists(f"{d}/b.bin")
    assert g.GFile(f"{d}/c.bin", "rb").read() == payload
    with pytest.raises(tf.errors.NotFoundError):
        g.GFile(f"{d}/missing", "rb").read()
    g.rmtree(d)
    assert not g.exists(f"{d}/sub/a.bin") and not g.exists(f"{d}/c.bin")


def test_register_twice_is_a_no_op():
    assert s3dlio_tf.registered()
    s3dlio_tf.register()
    s3dlio_tf.register()
    assert s3dlio_tf.registered()


def test_scheme_taken_names_it_and_the_way_out():
    # Another plugin (tensorflow-io, say) holds the schemes first.
    code = textwrap.dedent(
        """
        import tensorflow as tf
        import s3dlio._native as native
        tf.experimental.register_filesystem_plugin(native.__file__)
        try:
            import s3dlio_tf
        except Exception as e:
            print(type(e).__name__)
            print(e)
        else:
            print("no error")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    ).stdout
    assert out.startswith("SchemeTakenError"), out
    assert "s3://" in out and "import s3dlio_tf before" in out


def test_missing_directory_on_direct_is_not_found(scratch):
    with pytest.raises(tf.errors.NotFoundError):
        tf.io.gfile.listdir(f"direct://{scratch}/nothing-here")


def test_missing_bucket(s3_server):
    with pytest.raises(tf.errors.NotFoundError, match="no-such-bucket"):
        tf.io.gfile.GFile("s3://no-such-bucket/x/y.bin", "rb").read()


def test_corrupt_file_is_data_loss(scratch, s3_server):
    data = os.urandom(100_000)
    local = f"direct://{scratch}/c.bin"
    remote = f"s3://{BUCKET}/corrupt/c.bin"
    for uri in (local, remote):
        with tf.io.gfile.GFile(uri, "wb") as f:
            f.write(data)
    flip_byte(scratch / "c.bin", 5000)
    flip_byte(s3_server.data / BUCKET / "corrupt" / "c.bin", 5000)
    for uri in (local, remote):
        with pytest.raises(tf.errors.DataLossError, match="integrity") as e:
            tf.io.gfile.GFile(uri, "rb").read()
        assert uri.split("://")[1].lstrip("/") in str(e.value)


def test_large_reads_on_direct_are_bit_exact_and_checked(scratch):
    # direct:// serves reads from 8 MiB O_DIRECT pieces, four in flight
    # past the one read (tf/read_ahead.rs). BundleReader
    # reads each tensor with one call of its size: a small tensor first
    # puts the big one at an unaligned offset, and its odd element count
    # leaves a tail that ends off any block or piece boundary.
    rng = np.random.default_rng(11)
    saved = {
        "a_small": tf.Variable(rng.standard_normal(1001).astype(np.float32)),
        "b_big": tf.Variable(rng.standard_normal(5 * (2 << 20) + 3).astype(np.float32)),
        "c_mid": tf.Variable(rng.standard_normal((3 << 20) + 7).astype(np.float32)),
    }
    path = tf.train.Checkpoint(**saved).write(f"direct://{scratch}/big/model")
    restored = {k: tf.Variable(tf.zeros_like(v)) for k, v in saved.items()}
    tf.train.Checkpoint(**restored).read(path).assert_consumed()
    for k, v in saved.items():
        assert _bits(restored[k]) == _bits(v), k

    # Small sequential reads cross piece boundaries to an odd
    # end; a whole-file read is checked against the CRC recorded at write.
    payload = rng.integers(0, 256, (40 << 20) + 4097, dtype=np.uint8).tobytes()
    uri = f"direct://{scratch}/big/raw.bin"
    with tf.io.gfile.GFile(uri, "wb") as f:
        f.write(payload)
    with tf.io.gfile.GFile(uri, "rb") as f:
        chunks = []
        while chunk := f.read(999_999):
            chunks.append(chunk)
    assert b"".join(chunks) == payload
    with tf.io.gfile.GFile(uri, "rb") as f:
        f.seek((8 << 20) - 5)
        assert f.read(9 << 20) == payload[(8 << 20) - 5 : (17 << 20) - 5]
    assert tf.io.gfile.GFile(uri, "rb").read() == payload
    flip_byte(scratch / "big" / "raw.bin", (37 << 20) + 11)
    with pytest.raises(tf.errors.DataLossError, match="integrity"):
        tf.io.gfile.GFile(uri, "rb").read()
    # Small reads served by pieces fetched ahead are checked all the same.
    with pytest.raises(tf.errors.DataLossError, match="integrity"):
        with tf.io.gfile.GFile(uri, "rb") as f:
            while f.read(999_999):
                pass


def _relayed(backend: str, request: pytest.FixtureRequest, monkeypatch) -> CountingProxy:
    """A relay in front of `backend`'s server, which the plugin's next ops
    reach (each op opens its path afresh)."""
    if backend == "s3":
        relay = CountingProxy(request.getfixturevalue("s3_server").port)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{relay.port}")
    else:
        azurite = request.getfixturevalue("azurite")
        relay = CountingProxy(azurite.port)
        conn = os.environ[AZURE_ENV].replace(f":{azurite.port}/", f":{relay.port}/")
        monkeypatch.setenv(AZURE_ENV, conn)
    return relay


def _fetched_up_to(relay: CountingProxy, want: int) -> int:
    """The end of the ranges fetched from byte 0 without a gap, once it
    reaches `want` (or as far as it got after ten seconds)."""
    deadline = time.monotonic() + 10
    while True:
        end = 0
        for start, stop in sorted(relay.ranges):
            if start > end:
                break
            end = max(end, stop)
        if end >= want or time.monotonic() > deadline:
            return end
        time.sleep(0.02)


@pytest.mark.parametrize("backend", ["s3", "az"])
def test_reads_keep_eight_pieces_in_flight_ahead_and_fetch_each_byte_once(
    backend, request, monkeypatch
):
    # TF reads a data file front to back, one call per tensor, each waiting
    # for its bytes: the plugin keeps eight 8 MiB pieces in flight past the
    # one read and starts the next as soon as a read moves past one, so the
    # server never idles between windows. The ranges asked for show it.
    base = request.getfixturevalue(f"{backend}_base")
    mib = 1 << 20
    payload = os.urandom(100 * mib + 5)
    uri = f"{base}/ahead/data.bin"
    with tf.io.gfile.GFile(uri, "wb") as f:
        f.write(payload)
    relay = _relayed(backend, request, monkeypatch)
    try:
        f = tf.io.gfile.GFile(uri, "rb")
        assert f.read(1000) == payload[:1000]
        # The piece read and eight more: a 64 MiB window would stop at 64.
        assert _fetched_up_to(relay, 72 * mib) == 72 * mib
        f.seek(8 * mib + 3)
        assert f.read(10) == payload[8 * mib + 3 : 8 * mib + 13]
        assert _fetched_up_to(relay, 80 * mib) == 80 * mib
        # A read reaching back into the piece moved past is still served.
        f.seek(1000)
        chunks = [payload[:1000]]
        while chunk := f.read(999_999):
            chunks.append(chunk)
        assert b"".join(chunks) == payload
        fetched = sorted(relay.ranges)
        assert all(stop - start <= 8 * mib for start, stop in fetched), fetched
        assert sum(stop - start for start, stop in fetched) == len(payload), fetched
        # A piece that fails is the read's error, not short or stale data.
        tf.io.gfile.remove(uri)
        with pytest.raises(tf.errors.NotFoundError, match="data.bin"):
            f.seek(50 * mib)  # TF's buffered stream reads as it seeks
            f.read(10)
        f.close()
    finally:
        monkeypatch.undo()
        relay.close()


def test_a_read_elsewhere_parks_the_pieces_fetched_ahead(s3_base, request, monkeypatch):
    # TF's pool threads read big tensors in no fixed order: pieces fetched
    # ahead into the next tensor are kept while another is read, not thrown
    # away and fetched again when that tensor's turn comes.
    mib = 1 << 20
    payload = os.urandom(100 * mib)
    uri = f"{s3_base}/park/data.bin"
    with tf.io.gfile.GFile(uri, "wb") as f:
        f.write(payload)
    relay = _relayed("s3", request, monkeypatch)
    try:
        with tf.io.gfile.GFile(uri, "rb") as f:
            for start, end in [(0, mib), (80 * mib, 81 * mib), (mib, 80 * mib), (81 * mib, None)]:
                f.seek(start)
                want = payload[start:end]
                assert f.read(len(want)) == want
    finally:
        monkeypatch.undo()
        relay.close()
    fetched = sorted(relay.ranges)
    # TF's seek reads the byte before its target (to check the file has
    # it), a one-byte piece that may be fetched twice; dropping the queue at
    # the jump would fetch the 64 MiB fetched ahead of the first read again.
    assert len(payload) <= sum(stop - start for start, stop in fetched) < len(payload) + 16, fetched


def test_a_restore_fetches_each_byte_of_the_data_file_once(s3_base, request, monkeypatch):
    # TF reads tensors of more than 16M elements last, from its pool
    # threads: after the smaller ones it goes back to the file's start, and
    # fetching ahead past the big tensor would fetch theirs again.
    rng = np.random.default_rng(5)
    saved = {
        "a_big": tf.Variable(rng.standard_normal((16 << 20) + 5).astype(np.float32)),
        "b_mid": tf.Variable(rng.standard_normal(6 << 20).astype(np.float32)),
        "c_small": tf.Variable(rng.standard_normal(1000).astype(np.float32)),
    }
    prefix = tf.train.Checkpoint(**saved).write(f"{s3_base}/pool/ckpt")
    data_size = native.stat(f"{prefix}.data-00000-of-00001")["size"]
    relay = _relayed("s3", request, monkeypatch)
    try:
        # The restore op itself: `Checkpoint.read` first builds a checkpoint
        # reader that holds the GIL, which the in-process relay needs.
        restored = tf.raw_ops.RestoreV2(
            prefix=prefix,
            tensor_names=[f"{k}/.ATTRIBUTES/VARIABLE_VALUE" for k in saved],
            shape_and_slices=[""] * len(saved),
            dtypes=[tf.float32] * len(saved),
        )
    finally:
        monkeypatch.undo()
        relay.close()
    for got, v in zip(restored, saved.values(), strict=True):
        assert _bits(got) == _bits(v)
    fetched = sum(stop - start for start, stop in relay.ranges)
    # The data file once, the small index, and the few bytes opening a file
    # reads; 24 MiB more when the big tensor's read fetched on past it.
    assert data_size <= fetched < data_size + (1 << 20), (fetched, data_size)


def test_compressed_files_read_back(tf_base):
    saved = _variables()
    s3dlio_tf.configure(compression_level=1)
    try:
        path = tf.train.Checkpoint(**saved).write(f"{tf_base}/z/model")
    finally:
        s3dlio_tf.configure(None)
    restored = {k: tf.Variable(tf.zeros_like(v)) for k, v in saved.items()}
    tf.train.Checkpoint(**restored).read(path).assert_consumed()
    for k, v in saved.items():
        assert _bits(restored[k]) == _bits(v), k
    data_file = tf.io.gfile.glob(f"{path}.data-*")[0]
    info = native.stat(data_file)
    assert info["codec"] == "zstd-seekable"
    assert tf.io.gfile.stat(data_file).length == info["size"]
    with pytest.raises(ValueError, match="compression level"):
        s3dlio_tf.configure(compression_level=99)


KILLED_SAVER = """
import sys, tensorflow as tf, s3dlio_tf
base = sys.argv[1]
v = tf.Variable(tf.zeros((1024, 1024, 16)))
mgr = tf.train.CheckpointManager(tf.train.Checkpoint(v=v), base, max_to_keep=5)
v.assign(tf.fill(v.shape, 1.0))
mgr.save()
print("saved", flush=True)
step = 2.0
while True:
    v.assign(tf.fill(v.shape, step))
    mgr.save()
    step += 1
"""


@pytest.mark.parametrize("backend", ["direct", "s3"])
def test_sigkill_mid_save_leaves_latest_restorable(backend, request):
    base = request.getfixturevalue(f"{backend}_base") + "/killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVER, base], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "saved"
        # Let it get into later saves, then kill it without warning.
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    latest = tf.train.latest_checkpoint(base)
    assert latest is not None
    v = tf.Variable(tf.zeros((1024, 1024, 16)))
    tf.train.Checkpoint(v=v).restore(latest).assert_consumed()
    value = float(v[0, 0, 0])
    assert value >= 1.0
    assert bool(tf.reduce_all(v == value))


def test_import_s3dlio_without_tensorflow_and_no_link_dependency():
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import s3dlio, s3dlio._native as n; print(n.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    so = out.stdout.strip()
    needed = subprocess.run(["ldd", so], capture_output=True, text=True).stdout
    assert "tensorflow" not in needed, needed
    symbols = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True)
    assert " T TF_InitPlugin" in symbols.stdout


def test_abi_tables_match_the_installed_header(tmp_path: pathlib.Path):
    include = pathlib.Path(tf.__file__).parent / "include"
    layout = native.tf_abi_layout()
    lines = []
    for name, _ in layout:
        if name.startswith("sizeof "):
            expr = f"sizeof({name.split()[1]})"
        else:
            struct, field = name.split(".")
            expr = f"offsetof({struct}, {field})"
        lines.append(f'  std::printf("%s %zu\\n", "{name}", (size_t){expr});')
    src = tmp_path / "layout.cc"
    src.write_text(
        "#include <cstddef>\n#include <cstdio>\n"
        '#include "tensorflow/c/experimental/filesystem/filesystem_interface.h"\n'
        "int main() {\n" + "\n".join(lines) + "\n  return 0;\n}\n"
    )
    exe = tmp_path / "layout"
    subprocess.run(
        ["g++", "-std=c++17", f"-I{include}", str(src), "-o", str(exe)],
        check=True,
        capture_output=True,
    )
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    header = {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in out.splitlines()}
    assert header == dict(layout)
    # The sizes TF 2.21 expects (shared/notes/tensorflow-plugin.md).
    assert header["sizeof TF_FilesystemOps"] == 264
    assert header["sizeof TF_FilesystemPluginOps"] == 104
    assert header["sizeof TF_FilesystemPluginInfo"] == 32


@pytest.mark.parametrize("backend", ["s3", "az"])
def test_copy_and_rename_move_no_data_through_the_client(backend, request, monkeypatch):
    base = request.getfixturevalue(f"{backend}_base")
    payload = os.urandom(32 << 20)
    with tf.io.gfile.GFile(f"{base}/big.bin", "wb") as f:
        f.write(payload)
    relay = _relayed(backend, request, monkeypatch)
    try:
        tf.io.gfile.copy(f"{base}/big.bin", f"{base}/copy.bin")
        tf.io.gfile.rename(f"{base}/copy.bin", f"{base}/moved.bin")
    finally:
        monkeypatch.undo()
        relay.close()
    # Server-side copies only: a copy through the client would GET the
    # 32 MiB and send them back in uploads (twice, for both ops).
    assert relay.counts["copy (server-side)"] == 2, relay.counts
    assert set(relay.counts) <= {"HEAD", "list", "copy (server-side)", "DELETE"}, relay.counts
    assert not tf.io.gfile.exists(f"{base}/copy.bin")
    # The copy keeps the CRC32C recorded for the original, and a whole read
    # through TensorFlow checks the bytes against it.
    crc = native.stat(f"{base}/big.bin")["crc32c"]
    assert crc is not None
    assert native.stat(f"{base}/moved.bin")["crc32c"] == crc
    assert tf.io.gfile.GFile(f"{base}/moved.bin", "rb").read() == payload


def _other_bucket(s3_server) -> str:
    """A second bucket on the session's server, for moves across buckets."""
    client = s3_server.client()
    if OTHER_BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=OTHER_BUCKET)
    return OTHER_BUCKET


def test_a_compressed_file_moved_to_another_bucket_stays_compressed(s3_base, s3_server):
    # Across buckets a rename streams the stored bytes through the client,
    # compressed as they are: the copy must not be taken for a plain object.
    _other_bucket(s3_server)
    payload = os.urandom(3 << 20) + bytes(5 << 20)
    s3dlio_tf.configure(compression_level=1)
    try:
        with tf.io.gfile.GFile(f"{s3_base}/z.bin", "wb") as f:
            f.write(payload)
    finally:
        s3dlio_tf.configure(None)
    moved = f"s3://{OTHER_BUCKET}/moved/z.bin"
    tf.io.gfile.rename(f"{s3_base}/z.bin", moved)
    assert native.stat(moved)["codec"] == "zstd-seekable"
    assert tf.io.gfile.GFile(moved, "rb").read() == payload


def _write_multipart(uri: str) -> bytes:
    """A plain file at the 64 MiB multipart threshold: its CRC32C is
    recorded by the plugin, not carried by the upload."""
    data = os.urandom(64 << 20)
    with tf.io.gfile.GFile(uri, "wb") as f:
        f.write(data)
    return data


def test_a_file_moved_to_another_bucket_is_checked_and_keeps_its_crc(s3_base, s3_server):
    # Across buckets a rename streams the bytes through the client: they are
    # checked against the source's CRC32C before the copy is published, and
    # the copy records it (above the single-PUT limit S3 does not).
    _other_bucket(s3_server)
    key = s3_base.split("/", 3)[3] + "/across.bin"
    src = f"s3://{BUCKET}/{key}"
    moved = f"s3://{OTHER_BUCKET}/across/moved.bin"
    data = _write_multipart(src)
    flip_byte(s3_server.data / BUCKET / key, 40 << 20)
    with pytest.raises(tf.errors.DataLossError, match="integrity") as e:
        tf.io.gfile.rename(src, moved)
    assert key in str(e.value)
    assert not tf.io.gfile.exists(moved)
    assert tf.io.gfile.exists(src)

    flip_byte(s3_server.data / BUCKET / key, 40 << 20)  # mended
    tf.io.gfile.rename(src, moved)
    assert not tf.io.gfile.exists(src)
    head = s3_server.client().head_object(Bucket=OTHER_BUCKET, Key="across/moved.bin")
    assert "s3dlio-crc32c" in head["Metadata"], head["Metadata"]
    assert tf.io.gfile.GFile(moved, "rb").read() == data
    flip_byte(s3_server.data / OTHER_BUCKET / "across" / "moved.bin", 50 << 20)
    with pytest.raises(tf.errors.DataLossError, match="integrity"):
        tf.io.gfile.GFile(moved, "rb").read()


def test_a_temporary_file_is_checked_before_its_rename(s3_base, s3_server):
    # A closed `.tempstate` file of TF's checkpoint writer has its CRC32C
    # only in this process until its rename records it: a read of it and
    # a move to another bucket are still checked against it.
    _other_bucket(s3_server)
    key = s3_base.split("/", 3)[3] + "/t.data.tempstate123"
    temp = f"s3://{BUCKET}/{key}"
    data = _write_multipart(temp)
    head = s3_server.client().head_object(Bucket=BUCKET, Key=key)
    assert "s3dlio-crc32c" not in head["Metadata"], head["Metadata"]
    assert tf.io.gfile.GFile(temp, "rb").read() == data
    flip_byte(s3_server.data / BUCKET / key, 30 << 20)
    with pytest.raises(tf.errors.DataLossError, match="integrity"):
        tf.io.gfile.GFile(temp, "rb").read()
    moved = f"s3://{OTHER_BUCKET}/t.data"
    with pytest.raises(tf.errors.DataLossError, match="integrity"):
        tf.io.gfile.rename(temp, moved)
    assert not tf.io.gfile.exists(moved)
    assert tf.io.gfile.exists(temp)


def _corrupt_blob(azurite, uri: str, offset: int) -> None:
    """Rewrite a blob with one byte inverted and its metadata (the recorded
    CRC32C) kept, as bit rot under an intact record would look."""
    from azure.storage.blob import BlobServiceClient

    _, container, name = uri.split("://", 1)[1].split("/", 2)
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        container, name
    )
    metadata = blob.get_blob_properties().metadata
    data = bytearray(blob.download_blob().readall())
    data[offset] ^= 0xFF
    blob.upload_blob(bytes(data), overwrite=True, metadata=metadata)


def test_a_blob_moved_to_another_container_is_checked(az_base, azurite):
    # As across buckets: the streamed bytes are checked against the source's
    # recorded CRC32C before the copy is published.
    src = f"{az_base}/across.bin"
    moved = f"{az_base.rsplit('/', 1)[0]}/{azurite.create_container()}/moved.bin"
    data = os.urandom((20 << 20) + 3)
    with tf.io.gfile.GFile(src, "wb") as f:
        f.write(data)
    _corrupt_blob(azurite, src, 12 << 20)
    with pytest.raises(tf.errors.DataLossError, match="integrity"):
        tf.io.gfile.rename(src, moved)
    assert not tf.io.gfile.exists(moved)
    assert tf.io.gfile.exists(src)
    _corrupt_blob(azurite, src, 12 << 20)  # mended
    tf.io.gfile.rename(src, moved)
    assert native.stat(moved)["crc32c"] is not None
    assert tf.io.gfile.GFile(moved, "rb").read() == data


@pytest.mark.parametrize("size", [100_000, (20 << 20) + 3], ids=["one-put", "blocks"])
def test_azure_corrupt_file_is_data_loss(az_base, azurite, size):
    uri = f"{az_base}/corrupt/c.bin"
    data = os.urandom(size)
    with tf.io.gfile.GFile(uri, "wb") as f:
        f.write(data)
    assert native.stat(uri)["crc32c"] is not None
    assert tf.io.gfile.GFile(uri, "rb").read() == data
    _corrupt_blob(azurite, uri, size // 2)
    with pytest.raises(tf.errors.DataLossError, match="integrity") as e:
        tf.io.gfile.GFile(uri, "rb").read()
    assert uri.split("://")[1] in str(e.value)


def test_s3_multipart_file_records_its_crc(s3_base, s3_server):
    # At the 64 MiB multipart threshold: uploaded in parts, whose composite
    # checksum is not the file's; the plugin records the file's CRC32C.
    key = s3_base.split("/", 3)[3] + "/big.bin"
    uri = f"s3://{BUCKET}/{key}"
    data = _write_multipart(uri)
    head = s3_server.client().head_object(Bucket=BUCKET, Key=key)
    assert head["ETag"].strip('"').endswith("-8"), head["ETag"]  # eight 8 MiB parts
    assert "s3dlio-crc32c" in head["Metadata"], head["Metadata"]
    assert tf.io.gfile.GFile(uri, "rb").read() == data
    flip_byte(s3_server.data / BUCKET / key, 40 << 20)
    with pytest.raises(tf.errors.DataLossError, match="integrity") as e:
        tf.io.gfile.GFile(uri, "rb").read()
    assert uri.split("://")[1] in str(e.value)


def test_s3_checkpoint_rename_records_the_crc_in_its_copy(s3_base, s3_server, request, monkeypatch):
    # TF closes the data file as `<name>.tempstate<digits>` and renames it at
    # once; on S3 a rename is a copy, so the copy records the file's CRC32C
    # instead of a self-copy of its own after the upload.
    n = (80 << 20) // 4  # above the 64 MiB multipart threshold
    v = tf.Variable(tf.range(n, dtype=tf.float32))
    relay = _relayed("s3", request, monkeypatch)
    try:
        tf.train.Checkpoint(v=v).write(f"{s3_base}/crc/ckpt")
    finally:
        monkeypatch.undo()
        relay.close()
    assert relay.counts["CompleteMultipartUpload"] == 1, relay.counts
    # The data file's two renames (temporary -> shard -> final name) and the
    # shard index's one; a self-copy would make it four.
    assert relay.counts["copy (server-side)"] == 3, relay.counts
    key = s3_base.split("/", 3)[3] + "/crc/ckpt.data-00000-of-00001"
    head = s3_server.client().head_object(Bucket=BUCKET, Key=key)
    assert "s3dlio-crc32c" in head["Metadata"], head["Metadata"]
    uri = f"s3://{BUCKET}/{key}"
    # The variable and TF's small object-graph entry, read whole and checked.
    data = tf.io.gfile.GFile(uri, "rb").read()
    assert len(data) == head["ContentLength"] > 4 * n
    assert np.arange(n, dtype=np.float32).tobytes() in data
    flip_byte(s3_server.data / BUCKET / key, 70 << 20)
    with pytest.raises(tf.errors.DataLossError, match="integrity"):
        tf.io.gfile.GFile(uri, "rb").read()


@pytest.mark.parametrize("backend", ["s3", "az"])
def test_listing_a_missing_directory_is_not_found(backend, request):
    base = request.getfixturevalue(f"{backend}_base")
    with pytest.raises(tf.errors.NotFoundError):
        tf.io.gfile.listdir(f"{base}/nothing-here")
    # (GetChildren's own NOT_FOUND, which TF's C++ callers see, is checked by
    # the unit test in rust/python/src/tf/filesystem.rs: Python's listdir
    # asks is_directory first.)


def test_an_azure_directory_marker_is_an_empty_directory(az_base, azurite):
    # A zero-byte `dir/` blob, as consoles and other tools make. (s3s-fs
    # cannot hold one: it stores `dir/` as a directory and answers its HEAD
    # with 500, so the S3 side of this is the unit test's.)
    from azure.storage.blob import BlobServiceClient

    container = az_base.rsplit("/", 1)[1]
    BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        container, "marker/"
    ).upload_blob(b"")
    assert tf.io.gfile.listdir(az_base) == ["marker"]
    assert tf.io.gfile.isdir(f"{az_base}/marker")
    assert tf.io.gfile.listdir(f"{az_base}/marker") == []


def test_an_empty_container_root_lists_empty(az_base):
    assert tf.io.gfile.listdir(az_base) == []


def test_saving_a_large_variable_keeps_memory_bounded(scratch):
    # TF hands the whole 512 MiB tensor to one append; the plugin streams it
    # on in bounded pieces instead of collecting it (the 4 GiB target is a
    # bench row: bench/_frameworks_tf.py).
    prefix = f"direct://{scratch}/large/ckpt"
    saver = pathlib.Path(__file__).with_name("tf_memory_saver.py")
    out = subprocess.run(
        [sys.executable, str(saver), prefix, "0.5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    growth_mib = json.loads(out.stdout.strip().splitlines()[-1])["growth_mib"]
    assert growth_mib < 256, growth_mib
    v = tf.Variable(tf.zeros((512 << 20) // 4))
    tf.train.Checkpoint(v=v).read(prefix).assert_consumed()
    assert bool(tf.reduce_all(v == tf.range((512 << 20) // 4, dtype=tf.float32)))
