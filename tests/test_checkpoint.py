"""PyCheckpointStore on the local backends: save/load/list/delete, the
distributed writer API, file-like shard reads, validation and bad input."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

import s3dlio
from conftest import flip_byte, run_cli


def weights(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


@pytest.mark.parametrize("level", [None, 1, 9])
@pytest.mark.parametrize("strategy", ["flat", "hashed"])
def test_save_load_list_delete(base_uri: str, level: int | None, strategy: str) -> None:
    store = s3dlio.PyCheckpointStore(f"{base_uri}/run", strategy=strategy, compression_level=level)
    assert store.load_latest() is None
    data = {step: weights(100_000, step) for step in (10, 20, 30)}
    for step, arr in data.items():
        info = store.save(step, step // 10, "numpy", arr, user_meta={"lr": 0.1, "step": step})
        assert info.step == step and info.world_size == 1
        assert info.logical_size == arr.nbytes
    assert store.load_latest() == data[30].tobytes()
    assert store.load(20) == data[20].tobytes()
    infos = store.list_checkpoints()
    assert [i.step for i in infos] == [10, 20, 30]
    assert infos[0].user_meta == {"lr": 0.1, "step": 10}
    assert infos[0].framework == "numpy" and infos[0].epoch == 1
    if level is None:
        assert infos[0].ratio == 1.0
    else:
        assert infos[0].stored_size < infos[0].logical_size
    store.delete_checkpoint(30)
    assert [i.step for i in store.list_checkpoints()] == [10, 20]
    assert store.load_latest() == data[20].tobytes()
    with pytest.raises(FileNotFoundError, match="step 30.*committed steps: 10, 20"):
        store.load(30)


def test_existing_step_is_refused_then_overwritten_safely(scratch: pathlib.Path) -> None:
    store = s3dlio.PyCheckpointStore(f"file://{scratch}/run", compression_level=1)
    store.save(5, 0, "t", b"first version")
    with pytest.raises(FileExistsError, match="step 5 is already committed.*overwrite=True"):
        store.save(5, 0, "t", b"second")
    with pytest.raises(FileExistsError):
        store.writer(1, 0).get_distributed_shard_stream(5, 0, "t")
    assert store.load(5) == b"first version"
    step_dir = scratch / "run" / "step-000000000005"
    first = [p.name for p in step_dir.glob("rank-*")]
    info = store.save(5, 1, "t", b"second version", overwrite=True)
    assert info.generation == 1 and info.epoch == 1
    assert store.load(5) == b"second version"
    # The replaced generation's object is gone; only the new one remains,
    # under a name of its own save (rank-<r>-of-<w>.<tag>.bin.zst).
    shards = [p.name for p in step_dir.glob("rank-*")]
    assert len(first) == 1 and len(shards) == 1 and shards != first, (first, shards)
    assert re.fullmatch(r"rank-00000-of-00001\.[0-9a-f]+\.bin\.zst", shards[0]), shards


def test_failed_overwrite_keeps_committed_data(scratch: pathlib.Path) -> None:
    store = s3dlio.PyCheckpointStore(f"file://{scratch}/run")
    store.save(1, 0, "t", b"good")
    w = store.writer(2, 0, overwrite=True)
    w.save_distributed_shard(1, 0, "t", b"half of a new save")
    with pytest.raises(FileNotFoundError, match=r"missing shard for rank\(s\) 1 of world_size 2"):
        w.finalize_distributed_checkpoint(1, 0, "t")
    assert store.load(1) == b"good"
    assert store.list_checkpoints()[0].world_size == 1


def test_distributed_api_in_one_process(base_uri: str) -> None:
    store = s3dlio.PyCheckpointStore(f"{base_uri}/dist", compression_level=3)
    parts = [weights(50_000, r) for r in range(3)]
    metas = []
    for rank in range(3):
        w = store.writer(3, rank)
        if rank == 1:
            with w.get_distributed_shard_stream(7, 2, "torch") as stream:
                for chunk in np.array_split(parts[rank], 7):
                    stream.write_chunk(chunk)
                metas.append(stream.finalize())
        else:
            metas.append(w.save_distributed_shard(7, 2, "torch", parts[rank]))
    assert metas[1]["size"] == parts[1].nbytes
    with pytest.raises(ValueError, match="must run on rank 0"):
        store.writer(3, 1).finalize_distributed_checkpoint(7, 2, "torch", metas)
    info = store.writer(3, 0).finalize_distributed_checkpoint(7, 2, "torch", metas, {"k": [1]})
    assert info.world_size == 3
    reader = store.reader()
    manifest = reader.load_latest_manifest()
    assert manifest["step"] == 7 and len(manifest["shards"]) == 3
    for rank in range(3):
        assert reader.read_shard(7, rank) == parts[rank].tobytes()
    with pytest.raises(ValueError, match="pass rank="):
        store.load(7)
    assert store.load(7, rank=2) == parts[2].tobytes()


def test_stream_abort_leaves_nothing(scratch: pathlib.Path) -> None:
    store = s3dlio.PyCheckpointStore(f"file://{scratch}/run")
    stream = store.writer(1, 0).get_distributed_shard_stream(1, 0, "t")
    stream.write_chunk(b"x" * 100_000)
    with pytest.raises(RuntimeError, match="boom"):
        with stream:
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="already finalized or aborted"):
        stream.write_chunk(b"more")
    assert [p for p in scratch.rglob("*") if p.is_file()] == []


def test_open_shard_is_a_seekable_file(base_uri: str) -> None:
    store = s3dlio.PyCheckpointStore(f"{base_uri}/f", compression_level=1)
    data = weights(3_000_000).tobytes()
    store.save(1, 0, "t", data)
    with store.reader().open_shard(1, 0) as f:
        assert len(f) == len(data) and f.seekable()
        assert f.read(10) == data[:10]
        f.seek(-100, 2)
        assert f.read() == data[-100:]
        f.seek(5_000_000)
        buf = bytearray(1000)
        assert f.readinto(buf) == 1000 and bytes(buf) == data[5_000_000:5_001_000]
        f.seek(0)
        whole = np.empty(len(data), dtype=np.uint8)
        assert f.readinto(whole) == len(data)
        assert whole.tobytes() == data
        assert f.read() == b""
    with pytest.raises(ValueError, match="closed"):
        f.read(1)


def test_validated_reader_returns_owned_arrays(scratch: pathlib.Path) -> None:
    uri = f"file://{scratch}/v"
    arr = weights(123_457)
    s3dlio.PyCheckpointStore(uri, compression_level=3).save(1, 0, "numpy", arr)
    reader = s3dlio.PyValidatedCheckpointReader(uri)
    got = reader.read_shard_array(1, 0, np.float32)
    del reader
    assert got.dtype == np.float32 and np.array_equal(got, arr)
    got[0] = 42.0  # writable memory that belongs to the array
    with pytest.raises(ValueError, match="whole number of"):
        s3dlio.PyValidatedCheckpointReader(uri).read_shard_array(1, 0, np.float64)


@pytest.mark.parametrize("level", [None, 3])
def test_corrupt_shard_is_caught_everywhere(scratch: pathlib.Path, level: int | None) -> None:
    uri = f"file://{scratch}/rot"
    store = s3dlio.PyCheckpointStore(uri, compression_level=level)
    store.save(1, 0, "t", weights(500_000))
    shard = next((scratch / "rot").rglob("rank-*"))
    flip_byte(shard, 4321)
    with pytest.raises(s3dlio.IntegrityError, match=shard.name):
        store.load(1)
    with pytest.raises(s3dlio.IntegrityError, match=shard.name):
        store.reader().read_shard(1, 0)
    with pytest.raises(s3dlio.IntegrityError, match=shard.name):
        s3dlio.PyValidatedCheckpointReader(uri).read_shard_array(1, 0, np.float32)
    with pytest.raises(s3dlio.IntegrityError, match=shard.name):
        with store.reader().open_shard(1, 0) as f:
            while f.read(1 << 16):
                pass
    checks = store.reader().verify(1)
    assert checks[0]["error"] and shard.name in checks[0]["error"]
    out = run_cli("verify", uri, "--json")
    assert out.returncode == 1, out.stderr
    assert shard.name in out.stdout


def test_cli_info_and_verify_on_good_checkpoint(scratch: pathlib.Path) -> None:
    uri = f"file://{scratch}/good"
    s3dlio.PyCheckpointStore(uri, compression_level=1).save(3, 1, "t", bytes(1_000_000))
    out = run_cli("verify", uri)
    assert out.returncode == 0, out.stderr
    info = run_cli("info", uri, "--json")
    assert info.returncode == 0, info.stderr
    doc = json.loads(info.stdout)
    assert "3" in json.dumps(doc) and "ratio" in json.dumps(doc)


@pytest.mark.parametrize(
    ("world_size", "rank", "match"),
    [(4, 4, "rank 4 is out of range"), (4, -1, "rank -1 is out of range"), (0, 0, "world_size")],
)
def test_bad_ranks(scratch: pathlib.Path, world_size: int, rank: int, match: str) -> None:
    store = s3dlio.PyCheckpointStore(f"file://{scratch}/r")
    with pytest.raises(ValueError, match=match):
        store.writer(world_size, rank)


def test_bad_arguments(scratch: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="'flat' or 'hashed'"):
        s3dlio.PyCheckpointStore(f"file://{scratch}/x", strategy="spiral")
    store = s3dlio.PyCheckpointStore(f"file://{scratch}/x")
    with pytest.raises(ValueError, match="step must be >= 0"):
        store.save(-1, 0, "t", b"x")
    with pytest.raises(FileNotFoundError, match="no committed checkpoint at step 9"):
        store.load(9)
    with pytest.raises(FileNotFoundError):
        store.delete_checkpoint(9)
    with pytest.raises(ValueError, match="not JSON-serialisable|not JSON serializable"):
        store.save(1, 0, "t", b"x", user_meta={"f": object()})
    with pytest.raises(TypeError):
        store.save(1, 0, "t", "a str is not a buffer")
    assert store.list_checkpoints() == []
