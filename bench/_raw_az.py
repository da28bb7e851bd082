"""The simplest Azure Blob client, for a ceiling next to s3dlio on az://
(the Azure counterpart of bench/_raw_s3.py): a container SAS in the query
string, one keep-alive ``http.client`` connection per worker thread, Put
Blob bodies sent from the caller's memory, ranged GET bodies read straight
into the caller's buffers. No checksums, no retries, no copies of our own.

The server comes from bench/_servers.py: AZURE_STORAGE_CONNECTION_STRING,
S3DLIO_BENCH_AZ_CONTAINER and S3DLIO_BENCH_AZ_ACCOUNT.
"""

from __future__ import annotations

import datetime
import http.client
import os
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from _raw_s3 import Pieces

API_VERSION = "2021-12-02"


class RawAzure:
    """Whole-blob Put Blob requests and ranged GETs on `workers` threads."""

    def __init__(self, workers: int) -> None:
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        self.container = os.environ["S3DLIO_BENCH_AZ_CONTAINER"]
        self.account = os.environ["S3DLIO_BENCH_AZ_ACCOUNT"]
        parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
        endpoint = urllib.parse.urlsplit(parts["BlobEndpoint"].rstrip("/"))
        self.host, self.port, self.base = endpoint.hostname, endpoint.port, endpoint.path
        self.sas = generate_container_sas(
            self.account,
            self.container,
            account_key=parts["AccountKey"],
            permission=ContainerSasPermissions.from_string("racwdl"),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2),
        )
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="raw-az")
        self.local = threading.local()

    def close(self) -> None:
        self.pool.shutdown()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port)
            self.local.conn = conn
        return conn

    def _request(
        self,
        method: str,
        blob: str,
        headers: dict[str, str],
        body: Pieces | None = None,
        into: Pieces | None = None,
    ) -> None:
        conn = self._conn()
        path = f"{self.base}/{self.container}/{urllib.parse.quote(blob)}?{self.sas}"
        conn.putrequest(method, path, skip_accept_encoding=True)
        headers = {"x-ms-version": API_VERSION, **headers}
        if body is not None:
            headers["Content-Length"] = str(sum(len(p) for p in body))
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        for piece in body or ():
            conn.send(piece)
        resp = conn.getresponse()
        if resp.status >= 300:
            raise OSError(f"{method} {blob}: HTTP {resp.status} {resp.read()!r}")
        for piece in into or ():
            got = 0
            while got < len(piece):
                n = resp.readinto(piece[got:])
                if not n:
                    raise OSError(f"GET {blob}: body ended early")
                got += n
        if resp.read(1):
            raise OSError(f"{method} {blob}: longer body than asked for")

    def put_each(self, objects: dict[str, Pieces]) -> None:
        """Each blob in one Put Blob request, all in flight at once up to
        the pool's size."""
        futures = [
            self.pool.submit(self._request, "PUT", key, {"x-ms-blob-type": "BlockBlob"}, body)
            for key, body in objects.items()
        ]
        for f in futures:
            f.result()

    def get_all(self, objects: dict[str, list[Pieces]]) -> None:
        """Ranged GETs filling each blob's runs (consecutive from byte 0)."""
        futures = []
        for key, runs in objects.items():
            offset = 0
            for into in runs:
                n = sum(len(p) for p in into)
                headers = {"x-ms-range": f"bytes={offset}-{offset + n - 1}"}
                futures.append(self.pool.submit(self._request, "GET", key, headers, None, into))
                offset += n
        for f in futures:
            f.result()
