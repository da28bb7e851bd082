"""JAX / Orbax through s3dlio_jax on every backend, with real jax and
orbax-checkpoint on CPU: bit-exact save/restore through
``ocp.CheckpointManager``, pruning, commit by commit file, resharding on
an 8-device mesh, two real JAX processes, a saver killed before its
commit, and every bad input the adapter must name."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import SingleDeviceSharding

import s3dlio
import s3dlio_jax
from conftest import flip_byte, run_cli
from s3dlio_jax import _layout

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore:os.fork:RuntimeWarning"
)

WORKERS = pathlib.Path(__file__).with_name("jax_workers.py")
CPU = SingleDeviceSharding(jax.devices()[0])


def tree() -> dict:
    rng = np.random.default_rng(3)
    return {
        "params": {
            "w": jnp.asarray(rng.standard_normal((64, 33)).astype(np.float32)),
            "e": jnp.asarray(rng.standard_normal((17, 8)).astype(jnp.bfloat16)),
            "f8": jnp.asarray(rng.standard_normal(9)).astype(jnp.float8_e4m3fn),
        },
        "step": jnp.asarray(rng.integers(0, 1 << 30, (5, 3), dtype=np.int32)),
        "host": rng.integers(-5, 5, 7).astype(np.int64),
        "layers": [jnp.zeros(()), jnp.arange(4, dtype=jnp.uint8)],
        "lr": 0.125,
        "epoch": 7,
        "name": "run-a",
    }


def abstract_of(t: dict) -> dict:
    return jax.tree.map(
        lambda x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
            if isinstance(x, jax.Array)
            else x
        ),
        t,
    )


def assert_same(got: dict, want: dict) -> None:
    got_leaves, got_def = jax.tree_util.tree_flatten_with_path(got)
    want_leaves, want_def = jax.tree_util.tree_flatten_with_path(want)
    assert got_def == want_def
    for (path, g), (_, w) in zip(got_leaves, want_leaves, strict=True):
        label = jax.tree_util.keystr(path)
        if isinstance(w, (jax.Array, np.ndarray)):
            assert type(g) is type(w) or isinstance(g, type(w)), label
            gn, wn = np.asarray(g), np.asarray(w)
            assert gn.dtype == wn.dtype and gn.shape == wn.shape, label
            assert np.array_equal(gn.reshape(-1).view(np.uint8), wn.reshape(-1).view(np.uint8)), (
                label
            )
        else:
            assert g == w and type(g) is type(w), label


def manager(uri: str, **options) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        s3dlio_jax.path(uri),
        options=s3dlio_jax.manager_options(**options),
        handler_registry=s3dlio_jax.handler_registry(),
    )


def names(uri: str) -> set[str]:
    prefix = uri.rstrip("/") + "/"
    return {u[len(prefix) :] for u in s3dlio.list(prefix) if u.startswith(prefix)}


# -- every backend -----------------------------------------------------------


def test_save_restore_prune_and_reopen(base_uri: str) -> None:
    """Bit-exact fp32/bf16/fp8/int leaves, uncompressed and compressed;
    max_to_keep prunes the oldest step; a fresh manager sees the same
    steps and restores them."""
    uri = f"{base_uri}/run"
    t = tree()
    mngr = manager(uri, max_to_keep=2)
    mngr.save(0, args=s3dlio_jax.S3DlioSave(t))
    mngr.save(1, args=s3dlio_jax.S3DlioSave(t, compression_level=3))
    mngr.save(2, args=s3dlio_jax.S3DlioSave(t, compression_level=1, byte_grouping=False))
    mngr.wait_until_finished()
    assert mngr.all_steps() == [1, 2]
    for step in (1, 2):
        assert_same(mngr.restore(step, args=s3dlio_jax.S3DlioRestore(abstract_of(t))), t)
    mngr.close()  # waits for the background deletion of step 0
    stored = names(uri)
    assert not any(n.startswith("0/") for n in stored), stored
    assert {"1/commit_success.txt", "2/default/s3dlio_index.json"} <= stored

    fresh = manager(uri, max_to_keep=2)
    assert fresh.all_steps() == [1, 2] and fresh.latest_step() == 2
    assert_same(fresh.restore(1, args=s3dlio_jax.S3DlioRestore(abstract_of(t))), t)
    # Without an abstract tree: the saved tree as dicts, lists, numpy.
    raw = fresh.restore(2, args=s3dlio_jax.S3DlioRestore())
    assert raw["params"]["e"].dtype == jnp.bfloat16
    assert np.array_equal(raw["params"]["w"], np.asarray(t["params"]["w"]))
    assert raw["name"] == "run-a" and raw["epoch"] == 7 and isinstance(raw["layers"], list)
    meta = fresh.item_metadata(2)
    assert meta["params"]["e"].shape == (17, 8)
    fresh.close()


def test_composite_with_json(base_uri: str) -> None:
    uri = f"{base_uri}/composite"
    t = tree()
    mngr = manager(uri)
    mngr.save(
        5,
        args=ocp.args.Composite(
            state=s3dlio_jax.S3DlioSave(t, compression_level=1),
            meta=ocp.args.JsonSave({"lr": 0.1, "tag": "x"}),
        ),
    )
    mngr.wait_until_finished()
    out = mngr.restore(
        5,
        args=ocp.args.Composite(
            state=s3dlio_jax.S3DlioRestore(abstract_of(t)), meta=ocp.args.JsonRestore()
        ),
    )
    assert_same(out["state"], t)
    assert out["meta"] == {"lr": 0.1, "tag": "x"}
    mngr.close()


# -- local backend: behaviour and bad input ------------------------------------


def test_async_save_survives_donation(file_base: str) -> None:
    """`save` returns before the bytes are written; donating the saved
    array to the next step must not change what the checkpoint holds."""
    x = jnp.arange(1 << 16, dtype=jnp.float32)
    want = np.asarray(x).copy()
    mngr = manager(f"{file_base}/donate")
    mngr.save(0, args=s3dlio_jax.S3DlioSave({"x": x}))
    step = jax.jit(lambda a: a * 0 - 1, donate_argnums=0)
    y = step(x)
    y.block_until_ready()
    mngr.wait_until_finished()
    got = mngr.restore(0, args=s3dlio_jax.S3DlioRestore({"x": np.zeros_like(want)}))
    assert np.array_equal(got["x"], want)
    mngr.close()


def test_host_budget_smaller_than_tree(file_base: str) -> None:
    """numpy leaves are copied under max_host_bytes: a budget smaller
    than the tree still saves everything."""
    t = {f"a{i}": np.full((64, 64), i, dtype=np.float32) for i in range(8)}
    mngr = manager(f"{file_base}/budget")
    mngr.save(0, args=s3dlio_jax.S3DlioSave(t, max_host_bytes=20_000, chunk_bytes=8192))
    mngr.wait_until_finished()
    got = mngr.restore(
        0, args=s3dlio_jax.S3DlioRestore({k: np.zeros_like(v) for k, v in t.items()})
    )
    assert all(np.array_equal(got[k], t[k]) for k in t)
    mngr.close()


def test_dtype_cast_on_restore(file_base: str) -> None:
    mngr = manager(f"{file_base}/cast")
    x = jnp.linspace(0, 1, 12, dtype=jnp.float32)
    mngr.save(0, args=s3dlio_jax.S3DlioSave({"x": x}))
    mngr.wait_until_finished()
    target = {"x": jax.ShapeDtypeStruct((12,), jnp.bfloat16, sharding=CPU)}
    got = mngr.restore(0, args=s3dlio_jax.S3DlioRestore(target))["x"]
    assert got.dtype == jnp.bfloat16
    assert np.array_equal(np.asarray(got), np.asarray(x.astype(jnp.bfloat16)))
    mngr.close()


def test_standard_save_is_refused_naming_ours(file_base: str) -> None:
    uri = f"{file_base}/std"
    mngr = manager(uri)
    mngr.save(0, args=ocp.args.StandardSave({"x": jnp.ones(3)}))
    with pytest.raises(TypeError, match="S3DlioSave"):
        mngr.wait_until_finished()
    assert mngr.all_steps() == []
    mngr.close()
    mngr = manager(uri)
    mngr.save(1, args=ocp.args.PyTreeSave({"x": jnp.ones(3)}))
    with pytest.raises(TypeError, match="S3DlioSave"):
        mngr.wait_until_finished()
    mngr.close()
    assert not any(n in ("s3:", "file:") for n in os.listdir("."))


def test_manager_without_registry_names_ours(
    file_base: str, tmp_path: pathlib.Path, monkeypatch
) -> None:
    """Without handler_registry=, the manager takes StandardSave's handler
    from Orbax's global registry; on our path that is a TypeError naming
    s3dlio_jax.handler_registry() and S3DlioSave, and tensorstore writes
    nothing (it used to create a local directory named 'file:')."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = f"{file_base}/noreg"
    mngr = ocp.CheckpointManager(s3dlio_jax.path(uri), options=s3dlio_jax.manager_options())
    with pytest.raises(
        TypeError, match=r"handler_registry=s3dlio_jax\.handler_registry\(\).*S3DlioSave"
    ):
        mngr.save(0, args=ocp.args.StandardSave({"x": jnp.ones(3)}))
        mngr.wait_until_finished()
    assert mngr.all_steps() == []
    assert os.listdir(cwd) == []
    ours = manager(uri)
    ours.save(1, args=s3dlio_jax.S3DlioSave({"x": jnp.ones(3)}))
    ours.wait_until_finished()
    ours.close()
    fresh = ocp.CheckpointManager(s3dlio_jax.path(uri), options=s3dlio_jax.manager_options())
    target = {"x": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=CPU)}
    # Orbax looks for its own _METADATA first: in a step S3DlioSave wrote,
    # that lookup is the same TypeError naming the way out.
    with pytest.raises(TypeError, match=r"handler_registry\(\).*S3DlioRestore"):
        fresh.restore(1, args=ocp.args.StandardRestore(target))
    assert os.listdir(cwd) == []


def test_bad_save_arguments() -> None:
    with pytest.raises(ValueError, match="1-22"):
        s3dlio_jax.S3DlioSave({"x": jnp.ones(3)}, compression_level=23)
    with pytest.raises(TypeError, match=r"\['x'\].*object"):
        s3dlio_jax.S3DlioSave({"x": object()})
    with pytest.raises(ValueError, match="max_host_bytes"):
        s3dlio_jax.S3DlioSave({"x": jnp.ones(3)}, max_host_bytes=0)


def test_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="gs://"):
        s3dlio_jax.path("gs://bucket/run")


def test_missing_step(file_base: str) -> None:
    mngr = manager(f"{file_base}/missing")
    mngr.save(0, args=s3dlio_jax.S3DlioSave({"x": jnp.ones(3)}))
    mngr.wait_until_finished()
    with pytest.raises((FileNotFoundError, ValueError), match="9"):
        mngr.restore(9, args=s3dlio_jax.S3DlioRestore({"x": np.zeros(3, np.float32)}))
    mngr.close()


def test_tree_mismatch_names_the_leaf(file_base: str) -> None:
    mngr = manager(f"{file_base}/mismatch")
    mngr.save(0, args=s3dlio_jax.S3DlioSave({"a": jnp.ones(3), "b": {"c": jnp.ones((2, 2))}}))
    mngr.wait_until_finished()

    def restore(target: dict) -> None:
        mngr.restore(0, args=s3dlio_jax.S3DlioRestore(target))

    ok_c = jax.ShapeDtypeStruct((2, 2), jnp.float32, sharding=CPU)
    ok_a = jax.ShapeDtypeStruct((3,), jnp.float32, sharding=CPU)
    with pytest.raises(KeyError, match=r"\['b'\]\['d'\]"):
        restore({"a": ok_a, "b": {"c": ok_c, "d": ok_c}})
    with pytest.raises(ValueError, match=r"\['b'\]\['c'\].*\(3, 2\).*\(2, 2\)"):
        restore({"a": ok_a, "b": {"c": jax.ShapeDtypeStruct((3, 2), jnp.float32, sharding=CPU)}})
    with pytest.raises(ValueError, match=r"\['b'\]\['c'\].*partial"):
        restore({"a": ok_a})
    partial = mngr.restore(0, args=s3dlio_jax.S3DlioRestore({"a": ok_a}, partial=True))
    assert np.array_equal(partial["a"], np.ones(3))
    with pytest.raises(ValueError, match=r"\['a'\].*sharding"):
        restore({"a": jax.ShapeDtypeStruct((3,), jnp.float32), "b": {"c": ok_c}})
    mngr.close()


def test_corrupt_byte_names_object_and_leaf(file_base: str) -> None:
    uri = f"{file_base}/corrupt"
    mngr = manager(uri)
    t = {"good": jnp.ones(1000), "bad": jnp.arange(1000, dtype=jnp.float32)}
    mngr.save(0, args=s3dlio_jax.S3DlioSave(t))
    mngr.wait_until_finished()
    item = pathlib.Path(uri.removeprefix("file://")) / "0" / "default"
    info = run_cli("info", "--json", uri)
    assert info.returncode == 0, info.stderr
    (doc,) = json.loads(info.stdout)["orbax"]
    assert doc["step"] == 0 and doc["committed"] and doc["leaves"] == 2
    assert run_cli("verify", uri).returncode == 0
    index = json.loads((item / _layout.INDEX).read_text())
    (piece,) = next(leaf for leaf in index["leaves"] if leaf["key"] == "['bad']")["chunks"]
    flip_byte(item / piece["file"], piece["offset"] + 10)
    with pytest.raises(s3dlio.IntegrityError, match=rf"{piece['file']}.*\['bad'\]"):
        mngr.restore(0, args=s3dlio_jax.S3DlioRestore(abstract_of(t)))
    mngr.close()
    bad = run_cli("verify", uri)
    assert bad.returncode == 1 and "['bad']" in bad.stdout and piece["file"] in bad.stdout


def test_rename_on_object_store_names_manager_options(s3_base: str) -> None:
    src = s3dlio_jax.path(f"{s3_base}/a")
    (src / "f").write_text("x")
    with pytest.raises(OSError, match="manager_options"):
        src.rename(s3dlio_jax.path(f"{s3_base}/b"))


def test_path_layer(base_uri: str) -> None:
    """The epath operations Orbax uses, on every backend."""
    root = s3dlio_jax.path(f"{base_uri}/p")
    assert not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    assert root.exists() and root.is_dir()
    (root / "d" / "x.json").write_text('{"a": 1}')
    (root / "d" / "e" / "y").write_bytes(b"yy")
    (root / "top").write_text("t")
    assert sorted(p.name for p in root.iterdir()) == ["d", "top"]
    assert sorted(p.name for p in (root / "d").glob("*")) == ["e", "x.json"]
    assert (root / "d" / "x.json").read_text() == '{"a": 1}'
    assert (root / "d" / "x.json").is_file() and not (root / "d").is_file()
    assert (root / "top").stat().length == 1 and (root / "d").stat().is_directory
    with (root / "w").open("w") as f:
        f.write("written")
    assert (root / "w").read_text() == "written"
    (root / "d").rmtree()
    assert not (root / "d").exists()
    with pytest.raises(FileNotFoundError):
        (root / "d").rmtree()
    (root / "top").unlink()
    assert sorted(p.name for p in root.iterdir()) == ["w"]
    assert str(root / "w").endswith("/p/w") and "://" in str(root)


def test_local_listing_is_one_level(file_base: str, scratch: pathlib.Path) -> None:
    """iterdir/glob on a local directory read that directory only. Below
    `deep/` lies a chain of directories whose full path is longer than
    PATH_MAX: a listing that walks the subtree (as the core's local
    listing does) fails there with ENAMETOOLONG; one level never goes
    there."""
    root = s3dlio_jax.path(f"{file_base}/tree")
    (root / "top").write_text("t")
    (root / "deep" / "x.json").write_text("{}")
    fd = os.open(scratch / "tree" / "deep", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):
            name = "d" * 250
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        s3dlio.list(f"{file_base}/tree/")  # the walk the path layer must not do
    assert [p.name for p in root.iterdir()] == ["deep", "top"]
    assert [p.name for p in (root / "deep").glob("*")] == ["d" * 250, "x.json"]
    assert (root / "deep").is_dir() and (root / "top").stat().length == 1
    shutil.rmtree(scratch / "tree")


def test_rmtree_removes_commit_file_first(file_base: str, monkeypatch) -> None:
    from s3dlio import _native

    root = s3dlio_jax.path(f"{file_base}/r")
    for name in ("a.bin", "commit_success.txt", "z/b.bin", "z/commit_success.txt"):
        (root / name).write_text(name)
    order: list[str] = []
    real = _native.delete
    monkeypatch.setattr(_native, "delete", lambda u, o=None: (order.append(u), real(u, o))[1])
    root.rmtree()
    assert order[0].endswith("/r/commit_success.txt"), order
    assert not os.path.exists(file_base.removeprefix("file://") + "/r")


# -- subprocesses: device counts and real JAX processes ------------------------


def run_worker(*args: str, devices: int = 1, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run(
        [sys.executable, str(WORKERS), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_eight_device_mesh_reshard(request, backend: str) -> None:
    uri = request.getfixturevalue(f"{backend}_base") + "/mesh"
    check_ok(run_worker("mesh_save", uri, devices=8))
    check_ok(run_worker("mesh_restore", uri, devices=2))


def test_reshard_reads_only_the_slices(file_base: str) -> None:
    """Restored under another sharding, an array stored as is costs the
    bytes of the devices' slices (rounded out to CRC blocks), not the
    whole pieces overlapping each slice: 8 MiB in 2 row pieces, restored
    over 8 devices by rows and over a 4x2 grid, each reads about 8 MiB
    (whole pieces per slice: 32 MiB)."""
    proc = run_worker("reshard_bytes", f"{file_base}/bytes", devices=8)
    check_ok(proc)
    doc = json.loads(proc.stdout.strip().splitlines()[-2])
    for name, read in doc["read"].items():
        assert doc["nbytes"] <= read < 1.25 * doc["nbytes"], (name, doc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("backend", ["file", "az"])
def test_two_jax_processes_write_one_checkpoint(request, backend: str) -> None:
    uri = request.getfixturevalue(f"{backend}_base") + "/dist"
    coordinator = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKERS), "distributed", uri, coordinator, str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in range(2)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rc, out, err in outs:
        assert rc == 0 and out.strip().endswith("ok"), out[-3000:] + err[-3000:]
    stored = names(uri)
    assert {"3/default/d.p00000.000.bin", "3/default/index.p00001.json"} <= stored, stored
    assert any(n.startswith("3/default/d.p00001.") for n in stored), stored
    index = json.loads(s3dlio.get_bytes(f"{uri}/3/default/{_layout.INDEX}"))
    assert index["process_count"] == 2
    for leaf in index["leaves"]:
        assert {c["process"] for c in leaf["chunks"]} == {0, 1}, leaf["key"]


def test_killed_saver_leaves_step_invisible(file_base: str) -> None:
    uri = f"{file_base}/killed"
    proc = run_worker("killed", uri)
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "dying_in" in proc.stdout
    stored = names(uri)
    assert any(n.startswith("1/default/d.p00000") for n in stored), stored
    assert "1/commit_success.txt" not in stored
    mngr = manager(uri)
    assert mngr.all_steps() == [0]
    # The manager removes uncommitted steps in the background; its next
    # save waits for that.
    mngr.save(2, args=s3dlio_jax.S3DlioSave({"x": jnp.ones(3)}))
    mngr.wait_until_finished()
    assert mngr.all_steps() == [0, 2]
    assert not any(n.startswith("1/") for n in names(uri)), names(uri)
    mngr.close()
