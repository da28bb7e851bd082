"""Defects found by probing (issue 16), through the Python API users call:
bad inputs refused with a clear error (never a panic or an abort), keys
that would leave the base refused, and torch DCP drop-in details."""

from __future__ import annotations

import io
import json
import os
import pathlib
from typing import IO

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._extension import ExtensionRegistry, StreamTransformExtension
from torch.distributed.checkpoint.api import CheckpointException

import s3dlio
from s3dlio import _native
from s3dlio_torch import CheckpointExistsError, S3DlioReader, S3DlioWriter

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def test_out_of_range_numbers_are_value_errors_not_panics(scratch: pathlib.Path) -> None:
    uri = f"file://{scratch}/obj"
    for threads in (2**40, 2**63):
        with pytest.raises(ValueError, match="compression_threads must be between"):
            s3dlio.put_bytes(uri, b"x", compression_level=1, compression_threads=threads)
    store = s3dlio.PyCheckpointStore(f"file://{scratch}/ck")
    writer = store.writer(1, 0)
    writer.save_distributed_shard(1, 0, "t", b"abc")
    with pytest.raises(ValueError, match="timeout must be"):
        writer.finalize_distributed_checkpoint(1, 0, "t", timeout=1e300)
    with pytest.raises((ValueError, OverflowError)):
        s3dlio.PyCheckpointStore(f"direct://{scratch}/d", part_size=2**64 - 1)
    with pytest.raises(ValueError, match="part_size must be between"):
        s3dlio.PyCheckpointStore(f"direct://{scratch}/d", part_size=2**63)
    with pytest.raises(ValueError, match="thread_count must be between"):
        _native.read_items(f"file://{scratch}", [], thread_count=2**40)


def test_dot_segments_are_refused_not_collapsed() -> None:
    # Refused while parsing, before any client could collapse the path
    # into another container.
    for uri in (
        "az://acct/ctrone/x/../../ctrtwo/evil",
        "s3://bkt/a/../../other/k",
        "s3://bkt//abs",
    ):
        with pytest.raises(ValueError, match="never normalised"):
            s3dlio.put_bytes(uri, b"evil")


def test_mistyped_file_uri_is_an_error(scratch: pathlib.Path) -> None:
    os.chdir(scratch)
    with pytest.raises(ValueError, match="expected file://"):
        s3dlio.put_bytes("file:/x", b"x")
    assert not (scratch / "file:").exists()


def _small_state() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(64, dtype=torch.float32), "b": torch.ones(3)}


def test_storage_meta_records_the_checkpoint_id_as_given(scratch: pathlib.Path) -> None:
    given = scratch / "given"
    writer = S3DlioWriter(given)
    assert writer.storage_meta().checkpoint_id == given
    writer.reset(str(scratch / "other"))
    assert writer.storage_meta().checkpoint_id == str(scratch / "other")


def test_refused_overwrite_uses_torchs_phrase_and_names_the_option(scratch: pathlib.Path) -> None:
    path = scratch / "ow"
    dcp.save(_small_state(), storage_writer=S3DlioWriter(path))
    with pytest.raises(CheckpointException) as caught:
        dcp.save(_small_state(), storage_writer=S3DlioWriter(path))
    text = str(caught.value)
    assert "Checkpoint already exists" in text and "overwrite=True" in text, text
    err = next(iter(caught.value.failures.values()))
    if isinstance(err, tuple):
        err = err[0]
    assert isinstance(err, CheckpointExistsError)
    assert isinstance(err, FileExistsError) and isinstance(err, RuntimeError)


class _Xor(StreamTransformExtension):
    """A custom stream transform, as users register with torch."""

    @staticmethod
    def registry_name() -> str:
        return "test.xor"

    @staticmethod
    def from_descriptor(version: str) -> _Xor:
        return _Xor()

    def get_descriptor(self) -> str:
        return f"{self.registry_name()}/1"

    def transform_to(self, output: IO[bytes]) -> IO[bytes]:
        class W(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, b) -> int:  # type: ignore[override]
                data = bytes(x ^ 0x5A for x in bytes(b))
                output.write(data)
                return len(data)

            def flush(self) -> None:
                output.flush()

        return W()  # type: ignore[return-value]

    def transform_from(self, input: IO[bytes]) -> IO[bytes]:
        return io.BytesIO(bytes(x ^ 0x5A for x in input.read()))


def test_reader_takes_an_extension_registry_for_custom_transforms(scratch: pathlib.Path) -> None:
    path = scratch / "ext"
    state = _small_state()
    dcp.save(state, storage_writer=dcp.FileSystemWriter(path, _extensions=[_Xor()]))
    registry = ExtensionRegistry()
    registry.register(_Xor)
    loaded = {k: torch.zeros_like(v) for k, v in state.items()}
    dcp.load(loaded, storage_reader=S3DlioReader(path, _extension_registry=registry))
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k


def test_verify_refuses_a_structurally_broken_manifest(scratch: pathlib.Path) -> None:
    from conftest import run_cli

    base = scratch / "ck"
    store = s3dlio.PyCheckpointStore(f"file://{base}")
    store.save(1, 0, "t", b"abc" * 1000)
    assert run_cli("verify", f"file://{base}", "--json").returncode == 0
    (manifest,) = (base / "step-000000000001").glob("manifest*.json")
    text = manifest.read_text().replace('"world_size": 1', '"world_size": 0', 1)
    manifest.write_text(text)
    run = run_cli("verify", f"file://{base}", "--json")
    assert run.returncode != 0, run.stdout
    assert json.loads(run.stdout)["ok"] is False
    with pytest.raises(s3dlio.IntegrityError):
        store.load(1)


def test_cli_verifies_a_torch_dcp_checkpoint_item_by_item(scratch: pathlib.Path) -> None:
    from conftest import run_cli

    path = scratch / "dcp"
    state = {"w": torch.arange(4096, dtype=torch.float32), "i": torch.arange(999), "x": {"a": 1}}
    dcp.save(state, storage_writer=S3DlioWriter(path, compression_level=3))
    run = run_cli("verify", str(path), "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["layout"] == "torch-dcp" and report["ok"]
    assert report["items_crc_checked"] >= 3, report
    info = json.loads(run_cli("info", str(path), "--json").stdout)
    assert info["items"] == report["items_checked"]
    data = max(path.glob("*.distcp"), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    run = run_cli("verify", str(path), "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    assert not json.loads(run.stdout)["ok"]


def _first_failure(caught: pytest.ExceptionInfo[CheckpointException]) -> BaseException:
    err = next(iter(caught.value.failures.values()))
    return err[0] if isinstance(err, tuple) else err


def _bool_calls(scratch: pathlib.Path) -> list[tuple[str, object]]:
    """Every seed-API call taking a level, world size, rank, step or epoch,
    each with a bool where one of them goes; a store with step 1 committed."""
    base = f"file://{scratch}/ck"
    store = s3dlio.PyCheckpointStore(base)
    store.save(1, 0, "t", b"abc")
    reader = store.reader()
    writer = store.writer(1, 0)
    validated = s3dlio.PyValidatedCheckpointReader(base)
    return [
        ("compression_level", lambda: s3dlio.PyCheckpointStore(base, compression_level=True)),
        ("compression_level", lambda: s3dlio.put_bytes(f"{base}/o", b"x", compression_level=True)),
        ("step", lambda: store.save(True, 0, "t", b"x")),
        ("epoch", lambda: store.save(2, False, "t", b"x")),
        ("step", lambda: store.load(True)),
        ("rank", lambda: store.load(1, rank=False)),
        ("step", lambda: store.delete_checkpoint(True)),
        ("world_size", lambda: store.writer(True, 0)),
        ("rank", lambda: store.writer(2, False)),
        ("step", lambda: writer.save_distributed_shard(True, 0, "t", b"x")),
        ("epoch", lambda: writer.get_distributed_shard_stream(2, True, "t")),
        ("step", lambda: writer.finalize_distributed_checkpoint(True, 0, "t")),
        ("step", lambda: reader.manifest(True)),
        ("step", lambda: reader.read_shard(True, 0)),
        ("rank", lambda: reader.read_shard(1, False)),
        ("rank", lambda: reader.read_shard_into(1, False, bytearray(3))),
        ("step", lambda: reader.open_shard(True, 0)),
        ("step", lambda: reader.verify(True)),
        ("step", lambda: validated.read_shard(True, 0)),
        ("rank", lambda: validated.read_shard_array(1, False)),
    ]


def test_bools_are_refused_where_numbers_go(scratch: pathlib.Path) -> None:
    # pyo3 takes True as 1: step=True would have saved or loaded step 1.
    for arg, call in _bool_calls(scratch):
        with pytest.raises(ValueError, match=f"{arg} must be an integer, not a bool"):
            call()
    store = s3dlio.PyCheckpointStore(f"file://{scratch}/ck")
    assert store.latest_step() == 1
    assert [c.step for c in store.list_checkpoints()] == [1]
    assert not (scratch / "ck" / "o").exists()
    # Other wrong types name the argument too.
    with pytest.raises(TypeError, match="step"):
        store.load(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("level", [None, 3])
def test_an_empty_dcp_data_file_is_an_integrity_error_naming_it(
    scratch: pathlib.Path, level: int | None
) -> None:
    path = scratch / "dcp"
    state = {f"w{i}": torch.arange(4096 * (i + 1), dtype=torch.float32) for i in range(6)}
    dcp.save(state, storage_writer=S3DlioWriter(path, compression_level=level))
    files = sorted(path.glob("*.distcp"))
    assert files
    for data in files:
        data.write_bytes(b"")
    # One item at a time: each read alone, wherever it lay in its file
    # (an item past the start of an emptied file was a ValueError).
    for name, tensor in state.items():
        with pytest.raises(CheckpointException) as caught:
            dcp.load({name: torch.zeros_like(tensor)}, storage_reader=S3DlioReader(path))
        err = _first_failure(caught)
        assert isinstance(err, s3dlio.IntegrityError), f"{name}: {err!r}"
        text = str(err)
        assert any(f.name in text for f in files) and f"(item {name}" in text, text
