"""s3dlio vs the Python Azure peers on one Azurite, same data, one run.

Each peer uploads a local file to a blob and downloads it back to a local
file; every measurement runs in its own subprocess so its peak RSS is its
own. Prints seconds, MB/s and peak RSS per peer and direction, then the
ratios (peer time / s3dlio time: above 1 means s3dlio is faster).

Peers:
  azure-sdk       azure-storage-blob: upload_blob / download_blob().readinto
                  with max_concurrency, block and chunk sizes matched to s3dlio's
  azstoragetorch  BlobIO (its thread pool is min(32, cpus + 4), 16 MiB read
                  partitions; not configurable), through a SAS URL since it
                  takes no account key; skipped when not installed

    python bench/bench_azure.py             # 2 GiB
    python bench/bench_azure.py --quick     # 256 MiB smoke run
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fixtures_azure import ACCOUNT, KEY, start_azurite, stop_azurite  # noqa: E402

MIB = 1 << 20
# s3dlio's defaults (PutOptions: 8 MiB parts, 4 in flight; reads: 8 MiB
# ranges, 8 in flight); the SDK gets the same.
PART = 8 * MIB
UPLOAD_CONCURRENCY = 4
DOWNLOAD_CONCURRENCY = 8
DEFAULT_LAUNCHER = (
    pathlib.Path.home() / ".cache/s3dlio/tools/azurite-3.37.0/node_modules/.bin/azurite-blob"
)


# --- workers: one operation each, in a fresh process ---------------------


def work_s3dlio(op: str, conn: str, container: str, blob: str, path: str) -> None:
    import s3dlio

    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = conn
    uri = f"az://{ACCOUNT}/{container}/{blob}"
    if op == "upload":
        s3dlio.upload(path, uri)
    else:
        s3dlio.download(uri, path)


def work_azure_sdk(op: str, conn: str, container: str, blob: str, path: str) -> None:
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(
        conn,
        container,
        blob,
        max_block_size=PART,
        max_single_put_size=PART,
        max_chunk_get_size=PART,
        max_single_get_size=PART,
    )
    if op == "upload":
        with open(path, "rb") as f:
            client.upload_blob(
                f,
                length=os.path.getsize(path),
                overwrite=True,
                max_concurrency=UPLOAD_CONCURRENCY,
            )
    else:
        with open(path, "wb") as f:
            client.download_blob(max_concurrency=DOWNLOAD_CONCURRENCY).readinto(f)


def work_azstoragetorch(op: str, conn: str, container: str, blob: str, path: str) -> None:
    from azstoragetorch.io import BlobIO

    endpoint = conn.split("BlobEndpoint=")[1].split(";")[0]
    url = f"{endpoint}/{container}/{blob}?{sas(container)}"
    chunk = 64 * MIB
    if op == "upload":
        with open(path, "rb") as src, BlobIO(url, "wb") as dst:
            shutil.copyfileobj(src, dst, chunk)
    else:
        with BlobIO(url, "rb") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, chunk)


def sas(container: str) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        ACCOUNT,
        container,
        account_key=KEY,
        permission=ContainerSasPermissions.from_string("racwdl"),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2),
    )


WORKERS = {
    "s3dlio": work_s3dlio,
    "azure-sdk": work_azure_sdk,
    "azstoragetorch": work_azstoragetorch,
}


def peak_rss_mib() -> float:
    """VmHWM: this process's own peak (getrusage's ru_maxrss would count the
    parent's memory copied at fork, which survives exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker_main(argv: list[str]) -> None:
    peer, op, conn, container, blob, path = argv
    start = time.perf_counter()
    WORKERS[peer](op, conn, container, blob, path)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


# --- driver ----------------------------------------------------------------


def installed(peer: str) -> str | None:
    """None when usable, else why not."""
    module = {"s3dlio": "s3dlio", "azure-sdk": "azure.storage.blob"}.get(peer, peer)
    probe = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return probe.stderr.strip().splitlines()[-1]
    return None


def run_worker(peer: str, op: str, conn: str, container: str, blob: str, path: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", peer, op, conn, container, blob, path],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{peer} {op} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def digest(path: pathlib.Path) -> str:
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(16 * MIB):
            h.update(chunk)
    return h.hexdigest()


def make_data(path: pathlib.Path, size: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MIB)
            f.write(rng.bytes(n))
            left -= n


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=2.0, help="data size (default 2)")
    ap.add_argument("--quick", action="store_true", help="256 MiB instead")
    ap.add_argument("--peers", default="s3dlio,azure-sdk,azstoragetorch")
    args = ap.parse_args()
    size = 256 * MIB if args.quick else int(args.size_gib * (1 << 30))
    launcher = os.environ.get("S3DLIO_AZURITE") or str(DEFAULT_LAUNCHER)
    if not os.path.exists(launcher):
        sys.exit(f"azurite-blob not found at {launcher}: run `make tools`")

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-azure-", dir=ROOT / "target"))
    location = work / "azurite"
    location.mkdir()
    server = start_azurite(launcher, location)
    try:
        from azure.storage.blob import BlobServiceClient

        conn = server.connection_string
        container = "bench"
        BlobServiceClient.from_connection_string(conn).create_container(container)
        src = work / "src.bin"
        make_data(src, size)
        want = digest(src)
        print(
            f"{size / MIB:.0f} MiB of random data, Azurite 3.37.0 on 127.0.0.1, "
            f"parts {PART // MIB} MiB, upload concurrency {UPLOAD_CONCURRENCY}, "
            f"download concurrency {DOWNLOAD_CONCURRENCY}, {os.cpu_count()} CPUs"
        )
        results: dict[str, dict[str, dict]] = {}
        for peer in args.peers.split(","):
            why = installed(peer)
            if why:
                print(f"{peer:15s} skipped: {why}")
                continue
            blob = f"{peer}.bin"
            dst = work / f"{peer}.out"
            up = run_worker(peer, "upload", conn, container, blob, str(src))
            down = run_worker(peer, "download", conn, container, blob, str(dst))
            if dst.stat().st_size != size or digest(dst) != want:
                raise RuntimeError(f"{peer}: downloaded data differs from the source")
            dst.unlink()
            BlobServiceClient.from_connection_string(conn).get_blob_client(
                container, blob
            ).delete_blob()
            results[peer] = {"upload": up, "download": down}

        print(f"\n{'peer':15s} {'op':9s} {'seconds':>8s} {'MB/s':>8s} {'peak RSS MiB':>13s}")
        for peer, ops in results.items():
            for op, r in ops.items():
                mbs = size / 1e6 / r["seconds"]
                print(
                    f"{peer:15s} {op:9s} {r['seconds']:8.2f} {mbs:8.0f} {r['peak_rss_mib']:13.0f}"
                )
        if "s3dlio" in results:
            print("\nratios (peer seconds / s3dlio seconds; > 1: s3dlio faster)")
            ours = results["s3dlio"]
            for peer, ops in results.items():
                if peer == "s3dlio":
                    continue
                cells = ", ".join(
                    f"{op} {ops[op]['seconds'] / ours[op]['seconds']:.2f}x" for op in ops
                )
                print(f"  vs {peer:15s} {cells}")
    finally:
        stop_azurite(server.proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
