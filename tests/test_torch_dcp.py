"""PyTorch Distributed Checkpoint through s3dlio_torch, on every backend:
real ranks (gloo on 127.0.0.1), DTensors sharded and resharded, interop
with torch's own FileSystemWriter/FileSystemReader, corruption, commit
and failure behaviour."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import dcp_workers as w
import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._extension import ZStandard
from torch.distributed.checkpoint.api import CheckpointException
from torch.multiprocessing import ProcessExitedException

import s3dlio
from s3dlio import _native
from s3dlio_torch import S3DlioReader, S3DlioWriter, _layout

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

# (compression_level, byte_grouping): uncompressed; compressed with the
# default (float tensors byte-grouped); compressed as plain zstd frames.
CODECS = pytest.mark.parametrize(
    "codec", [(None, None), (3, None), (3, False)], ids=["plain", "grouped", "zstd"]
)
# What torch's stock reader says about a byte-grouped checkpoint.
STOCK_READER_HINT = "byte_grouping=False"


def local_path(uri: str) -> str | None:
    """The filesystem path of a file:// or direct:// URI (else None)."""
    scheme, _, rest = uri.partition("://")
    return rest if scheme in ("file", "direct") else None


def names(uri: str) -> set[str]:
    prefix = uri.rstrip("/") + "/"
    return {u[len(prefix) :] for u in s3dlio.list(prefix)}


def whole_state(zero: bool) -> dict[str, Any]:
    """The saved state as whole tensors, for a process without a group."""
    sd: dict[str, Any] = {
        k: torch.zeros_like(v) if zero else v.clone() for k, v in w.full_tensors().items()
    }
    sd["extras"] = (
        {"step": 0, "name": "", "nested": {"lr": 0.0, "betas": [0.0, 0.0]}}
        if zero
        else dict(w.EXTRAS)
    )
    return sd


def check_whole(sd: dict[str, Any], scale: dict[str, int] | None = None) -> None:
    for name, want in w.full_tensors().items():
        if scale and name in scale:
            want = want * scale[name]
        assert sd[name].dtype == want.dtype, name
        assert torch.equal(sd[name], want), f"{name} differs"
    assert sd["extras"] == w.EXTRAS


def load_whole(reader: Any) -> dict[str, Any]:
    sd = whole_state(zero=True)
    dcp.load(sd, storage_reader=reader)
    return sd


def inner(e: CheckpointException) -> BaseException:
    """The exception a rank raised inside DCP's wrapper."""
    (exc, _trace) = next(iter(e.failures.values()))
    return exc


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest) -> Iterator[w.World]:
    """Four rank processes shared by this module's multi-rank tests."""
    # The ranks inherit the environment when they start: start the remote
    # servers first (their fixtures put endpoints and credentials there),
    # else a run of this module alone fails on them.
    for server in ("azurite", "s3_server"):
        try:
            request.getfixturevalue(server)
        except pytest.skip.Exception:
            pass
    ranks = w.World(4)
    try:
        yield ranks
    finally:
        ranks.close()


def grouped(codec: tuple[int | None, bool | None]) -> bool:
    level, byte_grouping = codec
    return level is not None and byte_grouping is not False


def stock_load_fails_with_hint(path: str) -> None:
    """torch's own reader refuses a byte-grouped checkpoint, and its
    message says how to write one it can read."""
    with pytest.raises(CheckpointException) as caught:
        load_whole(dcp.FileSystemReader(path))
    assert STOCK_READER_HINT in str(caught.value), str(caught.value)


@CODECS
def test_save_and_load_with_4_2_1_ranks_resharding(world: w.World, base_uri: str, codec) -> None:
    base = f"{base_uri}/ranks"
    world.run(w.roundtrip, base, *codec)
    uri = f"{base}/saved-by-4"
    ranks = {n[: n.index("_", 2)] for n in names(uri) if n.endswith(".distcp")}
    assert ranks == {"__0", "__1", "__2", "__3"}, names(uri)
    # One process without a group assembles whole tensors from the shards.
    check_whole(load_whole(S3DlioReader(uri)))
    path = local_path(uri)
    if path is not None and grouped(codec):
        stock_load_fails_with_hint(path)
    elif path is not None:
        # torch's stock reader loads what we wrote, plain zstd items included.
        check_whole(load_whole(dcp.FileSystemReader(path)))


@pytest.mark.parametrize("level", [None, 3], ids=["plain", "zstd"])
def test_checkpoints_torch_wrote_load_with_s3dlio(scratch, level) -> None:
    path = scratch / "torch-written"
    extensions = [ZStandard()] if level else None
    dcp.save(
        whole_state(zero=False),
        storage_writer=dcp.FileSystemWriter(path, thread_count=2, _extensions=extensions),
    )
    check_whole(load_whole(S3DlioReader(str(path))))
    check_whole(load_whole(S3DlioReader(f"file://{path}")))


@CODECS
def test_flipped_byte_is_an_integrity_error_naming_file_and_item(base_uri: str, codec) -> None:
    uri = f"{base_uri}/corrupt"
    level, byte_grouping = codec
    writer = S3DlioWriter(uri, compression_level=level, byte_grouping=byte_grouping)
    dcp.save(whole_state(zero=False), storage_writer=writer)
    meta = S3DlioReader(uri).read_metadata()
    (index, info) = next((i, s) for i, s in meta.storage_data.items() if i.fqn == "big")
    data_uri = f"{uri}/{info.relative_path}"
    stored = bytearray(s3dlio.get_bytes(data_uri))
    # Inside the tensor bytes (plain) or the middle of its frame (zstd).
    at = info.offset + (info.s3dlio["tensor"][0] + 4000 if level is None else info.length // 2)
    stored[at] ^= 0x10
    s3dlio.put_bytes(data_uri, bytes(stored))

    with pytest.raises(CheckpointException) as caught:
        load_whole(S3DlioReader(uri))
    err = inner(caught.value)
    assert isinstance(err, s3dlio.IntegrityError), repr(err)
    assert info.relative_path in str(err) and "item big" in str(err), str(err)

    path = local_path(uri)
    if path is not None and level is None:
        # torch's own reader hands out the damaged tensor without a word.
        damaged = load_whole(dcp.FileSystemReader(path))
        assert not torch.equal(damaged["big"], w.full_tensors()["big"])


def test_overwrite_is_refused_before_writing_and_replaces_when_asked(base_uri: str) -> None:
    uri = f"{base_uri}/ow"
    dcp.save(whole_state(zero=False), storage_writer=S3DlioWriter(uri))
    first = names(uri)
    first_meta = s3dlio.get_bytes(f"{uri}/.metadata")

    doubled = whole_state(zero=False)
    doubled["big"] = doubled["big"] * 2
    with pytest.raises(CheckpointException) as caught:
        dcp.save(doubled, storage_writer=S3DlioWriter(uri))
    err = inner(caught.value)
    assert isinstance(err, FileExistsError) and "overwrite=True" in str(err), repr(err)
    assert names(uri) == first, "a refused save wrote something"
    assert s3dlio.get_bytes(f"{uri}/.metadata") == first_meta

    dcp.save(doubled, storage_writer=S3DlioWriter(uri, overwrite=True))
    second = names(uri)
    data = {n for n in second if n.endswith(".distcp")}
    # New data files, none shared with (or left over from) the first save.
    assert data and not data & first
    assert second == data | {".metadata"}
    check_whole(load_whole(S3DlioReader(uri)), scale={"big": 2})


def test_killed_rank_leaves_previous_checkpoint_loadable(world: w.World, base_uri: str) -> None:
    uri = f"{base_uri}/killed"
    world.run(w.save_on, uri, 2)
    before = s3dlio.get_bytes(f"{uri}/.metadata")
    with pytest.raises(ProcessExitedException):
        w.spawn(w.save_then_die, 2, uri)
    assert s3dlio.get_bytes(f"{uri}/.metadata") == before
    check_whole(load_whole(S3DlioReader(uri)))


def test_model_optimizer_async_and_rank_local_saves(world: w.World, base_uri: str) -> None:
    world.run(w.model_optimizer_and_async, f"{base_uri}/train")


def test_missing_checkpoint_and_bad_arguments(scratch) -> None:
    missing = scratch / "nothing-here"
    with pytest.raises(CheckpointException) as caught:
        load_whole(S3DlioReader(str(missing)))
    assert f"no distributed checkpoint at file://{missing}" in str(caught.value)

    for bad in ("ftp://host/ckpt", "gopher://x"):
        with pytest.raises(ValueError, match="unknown scheme"):
            S3DlioWriter(bad)
        with pytest.raises(ValueError, match="unknown scheme"):
            S3DlioReader(bad)
        assert not S3DlioWriter.validate_checkpoint_id(bad)
        assert not S3DlioReader.validate_checkpoint_id(bad)
    assert S3DlioWriter.validate_checkpoint_id(f"file://{scratch}/x")
    assert S3DlioReader.validate_checkpoint_id(str(scratch / "x"))

    for level in (0, 23, -1, 2.5, True):
        with pytest.raises(ValueError, match="compression level"):
            S3DlioWriter(scratch / "x", compression_level=level)
    with pytest.raises(ValueError, match="byte_grouping=True needs compression"):
        S3DlioWriter(scratch / "x", byte_grouping=True)
    with pytest.raises(ValueError, match="byte_grouping must be"):
        S3DlioWriter(scratch / "x", compression_level=3, byte_grouping="yes")  # type: ignore[arg-type]
    for bad_count in (0, -2):
        with pytest.raises(ValueError, match="thread_count"):
            S3DlioWriter(scratch / "x", thread_count=bad_count)
        with pytest.raises(ValueError, match="thread_count"):
            S3DlioReader(scratch / "x", thread_count=bad_count)


def test_writer_and_reader_pickle_without_native_state(scratch) -> None:
    writer = S3DlioWriter(scratch / "p", compression_level=1, storage_options=None)
    writer.reset(f"file://{scratch}/q")
    clone = pickle.loads(pickle.dumps(writer))
    assert clone.path == f"file://{scratch}/q" and clone.compression_level == 1
    assert clone.storage_meta().checkpoint_id == writer.checkpoint_id
    reader = pickle.loads(pickle.dumps(S3DlioReader(scratch / "p")))
    assert reader.checkpoint_id == f"file://{scratch}/p"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(whole_state(zero=False), storage_writer=clone)
    check_whole(load_whole(reader.__class__(f"file://{scratch}/q")))


def float_state() -> dict[str, Any]:
    """Weight-like float tensors of every dtype the byte grouping handles,
    next to items it must leave alone."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(200_000, generator=g) * 0.02
    return {
        "fp32": base.clone(),
        "bf16": base.to(torch.bfloat16),
        "fp16": base.to(torch.float16),
        "fp64": base[:50_000].to(torch.float64),
        "odd": base[:7].to(torch.bfloat16),
        "ints": torch.arange(50_000, dtype=torch.int64),
        "empty": torch.empty(0, dtype=torch.bfloat16),
        "extras": {"step": 3},
    }


def load_like(state: dict[str, Any], reader: Any) -> dict[str, Any]:
    out = {
        k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else {"step": 0}
        for k, v in state.items()
    }
    dcp.load(out, storage_reader=reader)
    return out


def check_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    for k, v in want.items():
        if isinstance(v, torch.Tensor):
            assert got[k].dtype == v.dtype and torch.equal(got[k].cpu(), v.cpu()), k
        else:
            assert got[k] == v, k


def stored_items(uri: str) -> dict[str, Any]:
    meta = S3DlioReader(uri).read_metadata()
    return {index.fqn: info for index, info in meta.storage_data.items()}


def test_float_tensors_are_byte_grouped_by_default(base_uri: str) -> None:
    """Compressed with the default, float items are stored byte-grouped
    (their own descriptor, smaller than plain zstd frames) and come back
    bit for bit; byte_grouping=False stores torch's plain zstd frames."""
    state = float_state()
    runs = {}
    for name, kw in (
        ("grouped", {}),
        ("forced", {"byte_grouping": True}),
        ("zstd", {"byte_grouping": False}),
    ):
        uri = f"{base_uri}/floats-{name}"
        dcp.save(state, storage_writer=S3DlioWriter(uri, compression_level=3, **kw))
        check_equal(load_like(state, S3DlioReader(uri)), state)
        runs[name] = stored_items(uri)
    for name in ("grouped", "forced"):
        items = runs[name]
        for fqn in ("fp32", "bf16", "fp16", "fp64", "odd"):
            assert items[fqn].transform_descriptors == [_layout.GROUPED_DESCRIPTOR], fqn
            start, length, width, _frame = items[fqn].s3dlio["grouping"]
            assert width == state[fqn].element_size() and length == state[fqn].nbytes, fqn
        others = [fqn for fqn in items if fqn in ("ints", "empty") or fqn.startswith("extras")]
        assert len(others) == 3, list(items)
        for fqn in others:
            assert items[fqn].transform_descriptors == [_layout.ZSTD_DESCRIPTOR], fqn
    for fqn in ("fp32", "bf16", "fp16", "fp64"):
        zstd, grouped_len = runs["zstd"][fqn].length, runs["grouped"][fqn].length
        assert runs["zstd"][fqn].transform_descriptors == [_layout.ZSTD_DESCRIPTOR]
        assert grouped_len < 0.97 * zstd, f"{fqn}: grouped {grouped_len} vs zstd {zstd}"


def test_stock_reader_refuses_grouped_checkpoint_pointing_to_byte_grouping_false(scratch) -> None:
    state = float_state()
    path = scratch / "grouped"
    dcp.save(state, storage_writer=S3DlioWriter(path, compression_level=1))
    with pytest.raises(CheckpointException) as caught:
        load_like(state, dcp.FileSystemReader(path))
    assert STOCK_READER_HINT in str(caught.value) and "S3DlioReader" in str(caught.value)
    plain = scratch / "plain-zstd"
    dcp.save(state, storage_writer=S3DlioWriter(plain, compression_level=1, byte_grouping=False))
    check_equal(load_like(state, dcp.FileSystemReader(plain)), state)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
@CODECS
def test_cuda_tensors_save_and_load_into_cuda_tensors(base_uri: str, codec) -> None:
    """Saved from GPU memory (copied to the host), loaded into GPU
    destination tensors (read on the host, then copied over)."""
    level, byte_grouping = codec
    state = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in float_state().items()}
    uri = f"{base_uri}/cuda"
    dcp.save(
        state,
        storage_writer=S3DlioWriter(uri, compression_level=level, byte_grouping=byte_grouping),
    )
    got = load_like(state, S3DlioReader(uri))
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            assert got[k].is_cuda, k
    check_equal(got, state)


def test_cached_frames_are_what_torch_save_writes() -> None:
    """A frame reused for a tensor of the same dtype/shape/stride is the
    one torch.save would write for it; tensors whose archive may depend on
    more (Python attributes) are framed on their own."""
    from s3dlio_torch import _framing

    cache = _framing.FrameCache()
    tensors = [
        torch.arange(12, dtype=torch.float32).reshape(3, 4),
        torch.randn(3, 4),
        torch.randn(4, 3).t().contiguous(),
        torch.randn(3, 4, dtype=torch.bfloat16),
        torch.randn(3, 4).requires_grad_(),
        torch.zeros(0, dtype=torch.int64),
        torch.tensor(7),
    ]
    for t in tensors + [t.clone() for t in tensors]:
        assert cache.frame(t) == _framing.frame(t)
    tagged = torch.randn(3, 4)
    tagged.note = "kept by torch.save"
    assert _framing._frame_key(tagged) is None
    assert cache.frame(tagged) == _framing.frame(tagged)
    assert cache.frame(tagged) != cache.frame(torch.randn(3, 4))


def test_many_small_items_in_several_batches_load_everywhere(scratch) -> None:
    """More items than one in-place batch holds, of repeated shapes and
    mixed dtypes, over two data files: both readers restore them exactly."""
    from s3dlio_torch import _writer

    gen = torch.Generator().manual_seed(5)
    sd: dict[str, Any] = {}
    for i in range(_writer.BATCH_ITEMS * 3 + 7):
        dtype = (torch.float32, torch.bfloat16, torch.int64, torch.float16)[i % 4]
        shape = ((3, 5), (8,), (2, 2, 2), (0,))[i % 4 if i % 9 else 3]
        sd[f"t{i}"] = (torch.randn(shape, generator=gen) * 100).to(dtype)
    sd["big"] = torch.randn(_writer.BATCH_BYTES // 4 + 11, generator=gen)
    path = scratch / "many"
    dcp.save(sd, storage_writer=S3DlioWriter(str(path), thread_count=2), no_dist=True)
    assert len([n for n in names(f"file://{path}") if n.endswith(".distcp")]) == 2
    for reader in (S3DlioReader(str(path)), dcp.FileSystemReader(path)):
        got = {k: torch.zeros_like(v) for k, v in sd.items()}
        dcp.load(got, storage_reader=reader, no_dist=True)
        for k, v in sd.items():
            assert torch.equal(got[k], v), k


def test_data_files_stay_below_the_stores_single_put_limit(base_uri: str) -> None:
    """On S3 every data file stays small enough to go up in one PUT (a
    multipart upload costs s3s-fs a second pass over the bytes), so a rank
    writes as many files as that takes, each with a whole-object ETag and
    CRC32C; elsewhere a rank writes one file per thread."""
    limit = _native.single_put_limit(base_uri)
    # 81 MiB in 9 MiB tensors: more than one file below the 64 MiB limit.
    state = {f"w{i}": torch.full((9 << 18,), float(i)) for i in range(9)}
    uri = f"{base_uri}/single-puts"
    dcp.save(state, storage_writer=S3DlioWriter(uri, thread_count=1), no_dist=True)
    files = sorted({info.relative_path for info in stored_items(uri).values()})
    if limit is None:
        assert len(files) == 1, files
    else:
        assert len(files) == 2, files
        for name in files:
            meta = s3dlio.stat(f"{uri}/{name}")
            assert meta["size"] < limit, (name, meta["size"])
            assert "-" not in (meta["etag"] or "-"), (name, meta["etag"])
            assert meta["crc32c"] is not None, name
    check_equal(load_like(state, S3DlioReader(uri)), state)
