"""Azure-only behaviour from Python on a real Azurite: SAS and account-key
credentials through storage_options and the environment, clear errors that
never print a secret, and a >1 GiB blob streamed both ways by the CLI with
bounded memory."""

from __future__ import annotations

import datetime
import filecmp
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fixtures_azure import ACCOUNT, ENV, KEY, Azurite

import s3dlio
from conftest import CLI


def sas_for(azurite: Azurite, container: str, permission: str) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        ACCOUNT,
        container,
        account_key=KEY,
        permission=ContainerSasPermissions.from_string(permission),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )


def test_sas_token_in_storage_options(azurite: Azurite, az_base: str) -> None:
    container = az_base.rsplit("/", 1)[1]
    sas = sas_for(azurite, container, "racwdl")
    opts = {"sas_token": sas, "endpoint": azurite.endpoint}
    uri = f"{az_base}/sas/obj.bin"
    s3dlio.put_bytes(uri, b"via sas", storage_options=opts)
    assert s3dlio.get_bytes(uri, storage_options=opts) == b"via sas"
    assert s3dlio.list(f"{az_base}/sas/", storage_options=opts) == [uri]

    read_only = {"sas_token": sas_for(azurite, container, "rl"), "endpoint": azurite.endpoint}
    assert s3dlio.get_bytes(uri, storage_options=read_only) == b"via sas"
    with pytest.raises(PermissionError, match="SAS token") as err:
        s3dlio.put_bytes(f"{az_base}/sas/denied", b"x", storage_options=read_only)
    signature = read_only["sas_token"].split("sig=")[1].split("&")[0]
    assert signature not in str(err.value)


def test_sas_connection_string_for_a_child_process(azurite: Azurite, az_base: str) -> None:
    container = az_base.rsplit("/", 1)[1]
    s3dlio.put_bytes(f"{az_base}/child/a", b"1")
    env = dict(os.environ)
    env[ENV] = (
        f"BlobEndpoint={azurite.endpoint};SharedAccessSignature={sas_for(azurite, container, 'rl')}"
    )
    out = subprocess.run([*CLI, "ls", f"{az_base}/child/"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["1", "a"], out.stdout


def test_account_key_options_and_clear_errors(azurite: Azurite, az_base: str) -> None:
    good = {"account_name": ACCOUNT, "account_key": KEY, "endpoint": azurite.endpoint}
    s3dlio.put_bytes(f"{az_base}/k", b"keyed", storage_options=good)
    wrong_key = "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgd3Jvbmcga2V5IQ=="
    bad = {**good, "account_key": wrong_key}
    with pytest.raises(PermissionError, match="account key") as err:
        s3dlio.get_bytes(f"{az_base}/k", storage_options=bad)
    assert wrong_key not in str(err.value) and KEY not in str(err.value)

    with pytest.raises(FileNotFoundError, match="container 'no-such-container'"):
        s3dlio.get_bytes(f"az://{ACCOUNT}/no-such-container/k")
    with pytest.raises(FileNotFoundError, match="container 'no-such-container'"):
        s3dlio.put_bytes(f"az://{ACCOUNT}/no-such-container/k", b"x")
    with pytest.raises(ValueError, match="storage account 'other'"):
        s3dlio.get_bytes(f"{az_base}/k", storage_options={**good, "account_name": "other"})
    with pytest.raises(ValueError, match="unknown storage option 'acount_key'.*account_key"):
        s3dlio.get_bytes(f"{az_base}/k", storage_options={"acount_key": KEY})


# Measures the peak RSS of the command it runs (KiB on Linux).
PEAK_RSS = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def cli_peak_rss_mib(*args: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *CLI, *args], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def test_a_blob_over_1_gib_streams_with_bounded_memory(az_base: str, scratch: pathlib.Path) -> None:
    size = (1 << 30) + (64 << 20) + 12_345
    src = scratch / "big.bin"
    # Period 251 (prime) and a counter per block: misplaced parts show.
    block = np.resize(np.arange(251, dtype=np.uint8), 8 << 20)
    with open(src, "wb") as f:
        written = 0
        for i in range(size // len(block) + 1):
            block[:8] = np.frombuffer(i.to_bytes(8, "little"), dtype=np.uint8)
            n = min(len(block), size - written)
            f.write(block[:n].tobytes())
            written += n
    back = scratch / "back.bin"
    uri = f"{az_base}/big/blob.bin"
    try:
        up = cli_peak_rss_mib("cp", str(src), uri)
        assert s3dlio.stat(uri)["size"] == size
        down = cli_peak_rss_mib("cp", uri, str(back))
        assert back.stat().st_size == size
        assert filecmp.cmp(src, back, shallow=False)
        print(f"peak RSS of the CLI: upload {up:.0f} MiB, download {down:.0f} MiB")
        assert up < 512 and down < 512, f"peak RSS: upload {up:.0f} MiB, download {down:.0f} MiB"
    finally:
        src.unlink(missing_ok=True)
        back.unlink(missing_ok=True)
        s3dlio.delete(uri) if s3dlio.list(uri) else None


def test_a_store_used_before_fork_works_in_the_child(az_base: str) -> None:
    store = s3dlio.PyCheckpointStore(f"{az_base}/forked")
    store.save(1, 0, "t", b"from parent")
    pid = os.fork()
    if pid == 0:  # child: the parent's pooled connections are not usable here
        code = 1
        try:
            ok = store.load(1) == b"from parent"
            store.save(2, 0, "t", b"from child")
            code = 0 if ok else 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the parent's connections")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.load(2) == b"from child"
