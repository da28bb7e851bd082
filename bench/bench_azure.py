"""s3dlio vs the Python Azure peers on one Azurite, same data, one run.

Each peer uploads a local file to a blob and downloads it back to a local
file; every measurement runs in its own subprocess, which reports its wall
time, CPU time and peak RSS growth during the operation.

Peers:
  azure-sdk       azure-storage-blob: upload_blob / download_blob().readinto
                  with max_concurrency, block and chunk sizes matched to s3dlio's
  azstoragetorch  BlobIO (its thread pool is min(32, cpus + 4), 16 MiB read
                  partitions; not configurable), through a SAS URL since it
                  takes no account key
  raw-curl        the server alone: curl sends the same Put Block / Put Block
                  List / ranged GET requests (same block size, same
                  concurrency, SAS in the URL) with no client-side work: block
                  files cut beforehand; each GET body written to a file of
                  its own (every peer's download writes the same bytes to
                  the local disk; on this VM the page-cache writes alone
                  cost 0.4-4 s of system CPU per GiB, `dd` from /dev/zero
                  measured). Where the peers are close to it,
                  Azurite is the limit, not the client.

The server comes from bench/report.py (bench/_servers.py):
AZURE_STORAGE_CONNECTION_STRING, S3DLIO_BENCH_AZ_CONTAINER and
S3DLIO_BENCH_AZ_ACCOUNT.

    python bench/report.py --only bench_azure.py [--quick]   # 2 GiB / 256 MiB
"""

# bench-needs: azure

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from _common import AZURE_PID_ENV, OUT_DIR, Bench
from _raw_azure import block_id
from _transfer import (
    MIB,
    RAW_CURL,
    Result,
    measured,
    measured_curl,
    peer_rows,
    random_file,
    report,
    run_child,
    show,
    split_file,
)

# s3dlio's defaults (PutOptions: 8 MiB parts, 4 in flight; reads: 8 MiB
# ranges, 8 in flight); the SDK and curl get the same.
PART = 8 * MIB
UPLOAD_CONCURRENCY = 4
DOWNLOAD_CONCURRENCY = 8
PEERS = ["s3dlio", "azure-sdk", "azstoragetorch", "raw-curl"]
PEER_NAMES = {
    "azure-sdk": "azure-storage-blob 12.27.0 (upload_blob / download_blob, sizes and "
    "max_concurrency matched)",
    "azstoragetorch": "azstoragetorch 0.2.0 (BlobIO, its own pool and partitions)",
    "raw-curl": "raw HTTP: parallel curl, same requests (server baseline)",
}


class Server:
    """The Azurite that bench/_servers.py started, from the environment."""

    def __init__(self) -> None:
        try:
            self.conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
            self.container = os.environ["S3DLIO_BENCH_AZ_CONTAINER"]
            self.account = os.environ["S3DLIO_BENCH_AZ_ACCOUNT"]
        except KeyError as e:
            raise SystemExit(
                f"{e.args[0]} is not set: run this through `python bench/report.py "
                "--only bench_azure.py`, which starts Azurite"
            ) from None
        parts = dict(p.split("=", 1) for p in self.conn.split(";") if "=" in p)
        self.key = parts["AccountKey"]
        self.endpoint = parts["BlobEndpoint"].rstrip("/")

    def sas(self) -> str:
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return generate_container_sas(
            self.account,
            self.container,
            account_key=self.key,
            permission=ContainerSasPermissions.from_string("racwdl"),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2),
        )

    def blob_url(self, blob: str, sas: str, query: str = "") -> str:
        q = f"{query}&{sas}" if query else sas
        return f"{self.endpoint}/{self.container}/{blob}?{q}"


# --- workers: one operation each, in a fresh process ---------------------


def work_s3dlio(srv: Server, op: str, blob: str, path: str) -> None:
    import s3dlio

    uri = f"az://{srv.account}/{srv.container}/{blob}"
    if op == "upload":
        s3dlio.upload(path, uri)
    else:
        s3dlio.download(uri, path)


def work_azure_sdk(srv: Server, op: str, blob: str, path: str) -> None:
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(
        srv.conn,
        srv.container,
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


def work_azstoragetorch(srv: Server, op: str, blob: str, path: str) -> None:
    from azstoragetorch.io import BlobIO

    url = srv.blob_url(blob, srv.sas())
    chunk = 64 * MIB
    if op == "upload":
        with open(path, "rb") as src, BlobIO(url, "wb") as dst:
            shutil.copyfileobj(src, dst, chunk)
    else:
        with BlobIO(url, "rb") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, chunk)


def curl(url: str, extra: list[str], out: str = "/dev/null") -> None:
    # "Expect:" off: curl would otherwise wait for 100-continue before
    # sending each block, which no SDK does.
    cmd = ["curl", "-sS", "--fail", "-o", out, "-H", "Expect:", *extra, url]
    subprocess.run(cmd, check=True, capture_output=True)


def work_raw_curl(srv: Server, op: str, blob: str, path: str, extra: str) -> None:
    """Upload the part files listed (JSON) in `extra`, or download the blob,
    `path`'s size, into one file per range in the directory `extra`."""
    sas = srv.sas()
    if op == "upload":
        blocks = json.loads(extra)
        ids = [block_id(n) for n in range(len(blocks))]

        def put_block(i: int) -> None:
            q = f"comp=block&blockid={urllib.parse.quote(ids[i], safe='')}"
            curl(srv.blob_url(blob, sas, q), ["-T", blocks[i]])

        with ThreadPoolExecutor(UPLOAD_CONCURRENCY) as pool:
            list(pool.map(put_block, range(len(blocks))))
        body = "".join(f"<Latest>{i}</Latest>" for i in ids)
        curl(
            srv.blob_url(blob, sas, "comp=blocklist"),
            ["-X", "PUT", "--data-binary", f"<BlockList>{body}</BlockList>"],
        )
    else:
        size = os.path.getsize(path)
        url = srv.blob_url(blob, sas)

        def get_range(off: int) -> None:
            rng = f"x-ms-range: bytes={off}-{min(off + PART, size) - 1}"
            curl(url, ["-H", rng], out=f"{extra}/{off // PART:05d}")

        with ThreadPoolExecutor(DOWNLOAD_CONCURRENCY) as pool:
            list(pool.map(get_range, range(0, size, PART)))


WORKERS = {
    "s3dlio": work_s3dlio,
    "azure-sdk": work_azure_sdk,
    "azstoragetorch": work_azstoragetorch,
}


def worker_main(argv: list[str]) -> None:
    peer, op, blob, path = argv[:4]
    srv = Server()
    size = os.path.getsize(path) if op == "upload" or peer == RAW_CURL else 0
    if peer == RAW_CURL:
        report(measured_curl(size, lambda: work_raw_curl(srv, op, blob, path, argv[4])))
        return
    with measured(size) as r:
        WORKERS[peer](srv, op, blob, path)
    r["bytes"] = os.path.getsize(path)
    report(r)


# --- driver ----------------------------------------------------------------


def digest(*paths: pathlib.Path) -> str:
    """Of the files' bytes, one after the other."""
    h = hashlib.blake2b()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(16 * MIB):
                h.update(chunk)
    return h.hexdigest()


def run_worker(peer: str, op: str, blob: str, path: str, *extra: str) -> Result:
    args = ["--worker", peer, op, blob, path, *extra]
    return run_child(__file__, args, f"{peer} {op}", AZURE_PID_ENV)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
        return
    bench = Bench(__doc__.splitlines()[0])
    srv = Server()
    size = 256 * MIB if bench.quick else 2 << 30
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(srv.conn).get_container_client(
        srv.container
    )
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-azure-", dir=OUT_DIR))
    try:
        src = work / "src.bin"
        random_file(src, size)
        want = digest(src)
        print(
            f"{size / MIB:.0f} MiB of random data, Azurite on {srv.endpoint}, "
            f"blocks {PART // MIB} MiB, upload concurrency {UPLOAD_CONCURRENCY}, "
            f"download concurrency {DOWNLOAD_CONCURRENCY}, {os.cpu_count()} CPUs"
        )
        # One round: Azurite frees a deleted blob's space only every 10
        # minutes, so each extra round would hold another copy per peer.
        results: dict[str, dict[str, Result]] = {}
        for peer in PEERS:
            blob = f"{peer}.bin"
            dst = work / f"{peer}.out"
            extra: list[str] = []
            if peer == RAW_CURL:  # cut beforehand, not timed
                extra = [json.dumps(split_file(src, PART, work / "blocks"))]
            up = run_worker(peer, "upload", blob, str(src), *extra)
            shutil.rmtree(work / "blocks", ignore_errors=True)
            if peer == RAW_CURL:
                ranges = work / "ranges"
                ranges.mkdir()
                down = run_worker(peer, "download", blob, str(src), str(ranges))
                got = sorted(ranges.iterdir())
            else:
                down = run_worker(peer, "download", blob, str(dst))
                got = [dst]
            if sum(p.stat().st_size for p in got) != size or digest(*got) != want:
                raise RuntimeError(f"{peer}: the blob's data differs from the source")
            for p in got:
                p.unlink()
            container.get_blob_client(blob).delete_blob()
            results[peer] = {"upload": up, "download": down}
            for op, r in results[peer].items():
                show(peer, op, r)
        for op, what in [("upload", "upload (file to blob)"), ("download", "download")]:
            peer_rows(
                bench,
                "azure",
                f"{what} {size // MIB} MiB",
                results["s3dlio"][op],
                {peer: results[peer][op] for peer in PEERS[1:]},
                PEER_NAMES,
                f"Azurite on 127.0.0.1; blocks {PART // MIB} MiB, concurrency "
                f"{UPLOAD_CONCURRENCY} up / {DOWNLOAD_CONCURRENCY} down; one run each",
                curl_note="curl sends pre-cut part files / writes each GET body to a file of "
                "its own, its RSS is the largest curl process's peak",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
