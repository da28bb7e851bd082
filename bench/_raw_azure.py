"""The simplest Azure Blob client there is, for a ceiling next to the real
clients (the Azure twin of _raw_s3.py): what Azurite and the loopback can
move when the client does almost nothing.

Requests carry a container SAS made once (no per-request signing), each
worker thread keeps one keep-alive `http.client` connection, request bodies
are sent from the caller's memory and response bodies are read straight into
the caller's buffers. No checksums, no retries, no copies of our own.

The bench's environment names the server (bench/_servers.py):
AZURE_STORAGE_CONNECTION_STRING, S3DLIO_BENCH_AZ_CONTAINER.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import os
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from _raw_s3 import Pieces, cut, exchange


def block_id(n: int) -> str:
    """The id of a blob's `n`th block: one fixed length for all of them, as
    Azure requires within a blob."""
    return base64.b64encode(f"{n:08d}".encode()).decode()


class RawAzure:
    """Whole-blob Put Blobs (or Put Block + Put Block List) and ranged Get
    Blobs on a pool of `workers` threads."""

    def __init__(self, workers: int) -> None:
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        parts = dict(
            p.split("=", 1) for p in os.environ["AZURE_STORAGE_CONNECTION_STRING"].split(";") if p
        )
        self.container = os.environ["S3DLIO_BENCH_AZ_CONTAINER"]
        self.base = urllib.parse.urlsplit(parts["BlobEndpoint"].rstrip("/"))
        self.sas = generate_container_sas(
            parts["AccountName"],
            self.container,
            account_key=parts["AccountKey"],
            permission=ContainerSasPermissions(read=True, write=True, delete=True),
            expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2),
        )
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="raw-az")
        self.local = threading.local()

    def close(self) -> None:
        self.pool.shutdown()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.base.hostname, self.base.port)
            self.local.conn = conn
        return conn

    def _request(
        self,
        method: str,
        blob: str,
        headers: dict[str, str],
        body: Pieces | None = None,
        into: Pieces | None = None,
        query: str = "",
    ) -> None:
        try:
            self._send(method, blob, headers, body, into, query)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # Azurite (Node) closes keep-alive connections idle for 5 s, as
            # between two timed rounds: one fresh connection, one retry.
            self.local.conn.close()
            self.local.conn = None
            self._send(method, blob, headers, body, into, query)

    def _send(
        self,
        method: str,
        blob: str,
        headers: dict[str, str],
        body: Pieces | None,
        into: Pieces | None,
        query: str,
    ) -> None:
        path = f"{self.base.path}/{self.container}/{urllib.parse.quote(blob)}?{query}{self.sas}"
        headers = {"x-ms-version": "2021-08-06", **headers}
        exchange(self._conn(), method, path, headers, body, into, f"{method} {blob}")

    def put_each(self, blobs: dict[str, Pieces]) -> None:
        """Each blob in one Put Blob, all in flight at once up to the pool's size."""
        futures = [
            self.pool.submit(self._request, "PUT", name, {"x-ms-blob-type": "BlockBlob"}, body)
            for name, body in blobs.items()
        ]
        for f in futures:
            f.result()

    def put_blocks(self, blobs: dict[str, Pieces], block_size: int) -> None:
        """Each blob as Put Blocks of `block_size` bytes, all in flight at
        once up to the pool's size, then one Put Block List per blob: the
        requests a streaming writer that does not know the size sends."""
        futures = []
        ids: dict[str, list[str]] = {}
        for name, body in blobs.items():
            ids[name] = []
            for n, block in enumerate(cut(body, block_size)):
                bid = block_id(n)
                ids[name].append(bid)
                query = f"comp=block&blockid={urllib.parse.quote(bid, safe='')}&"
                futures.append(self.pool.submit(self._request, "PUT", name, {}, block, None, query))
        for f in futures:
            f.result()
        commits = []
        for name, blocks in ids.items():
            xml = "".join(f"<Latest>{b}</Latest>" for b in blocks)
            body = [memoryview(f"<BlockList>{xml}</BlockList>".encode())]
            commits.append(
                self.pool.submit(self._request, "PUT", name, {}, body, None, "comp=blocklist&")
            )
        for f in commits:
            f.result()

    def get_each(self, blobs: dict[str, Pieces]) -> None:
        """Each blob read whole into its pieces, up to the pool's size at once."""
        self.get_all({name: [into] for name, into in blobs.items()})

    def get_all(self, blobs: dict[str, list[Pieces]]) -> None:
        """One ranged GET per run of each blob's runs (consecutive from
        byte 0), up to the pool's size at once."""
        futures = []
        for name, runs in blobs.items():
            offset = 0
            for into in runs:
                n = sum(len(p) for p in into)
                headers = {"x-ms-range": f"bytes={offset}-{offset + n - 1}"}
                futures.append(self.pool.submit(self._request, "GET", name, headers, None, into))
                offset += n
        for f in futures:
            f.result()
