"""The simplest S3 client there is, for a ceiling next to the real
clients: what the server (and the loopback) can move when the client does
almost nothing.

Requests are presigned by botocore (a query-string SigV4, no payload
hashing, ~0.1 ms each), each worker thread keeps one keep-alive
`http.client` connection, request bodies are sent from the caller's memory
and response bodies are read straight into the caller's buffers. No
checksums, no retries, no copies of our own.

The bench's environment names the server (bench/_servers.py): AWS_* and
S3DLIO_BENCH_S3_BUCKET.
"""

from __future__ import annotations

import http.client
import os
import threading
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# A run of an object's bytes, scattered over (or gathered from) buffers.
Pieces = list[memoryview]


def cut(buffers: Sequence[memoryview], size: int) -> list[Pieces]:
    """`buffers` (byte views, in order) cut into consecutive runs of `size`
    bytes (the last one shorter), each run a list of slices of them."""
    runs: list[Pieces] = [[]]
    room = size
    for buf in buffers:
        at = 0
        while at < len(buf):
            if room == 0:
                runs.append([])
                room = size
            take = min(room, len(buf) - at)
            runs[-1].append(buf[at : at + take])
            at += take
            room -= take
    return [r for r in runs if r]


def split_even(buffers: Sequence[memoryview], parts: int) -> list[Pieces]:
    """`buffers` cut into `parts` runs of about the same size."""
    total = sum(len(b) for b in buffers)
    return cut(buffers, max(1, -(-total // parts)))


def exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Pieces | None,
    into: Pieces | None,
    what: str,
) -> http.client.HTTPResponse:
    """One request on a keep-alive connection: the body sent piece by piece
    from the caller's memory, the response body read straight into `into`
    (exactly filled: a shorter or longer body is an error naming `what`)."""
    headers = dict(headers)
    conn.putrequest(method, path, skip_accept_encoding=True)
    if body is not None:
        headers["Content-Length"] = str(sum(len(p) for p in body))
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    for piece in body or ():
        conn.send(piece)
    resp = conn.getresponse()
    if resp.status >= 300:
        raise OSError(f"{what}: HTTP {resp.status} {resp.read()!r}")
    for piece in into or ():
        got = 0
        while got < len(piece):
            n = resp.readinto(piece[got:])
            if not n:
                raise OSError(f"{what}: body ended early")
            got += n
    if resp.read(1):
        raise OSError(f"{what}: longer body than asked for")
    return resp


class RawS3:
    """Whole-object PUTs and ranged GETs on a pool of `workers` threads."""

    def __init__(self, workers: int) -> None:
        import boto3

        self.bucket = os.environ["S3DLIO_BENCH_S3_BUCKET"]
        self.s3 = boto3.client(
            "s3",
            endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"],
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
        )
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="raw-s3")
        self.local = threading.local()

    def close(self) -> None:
        self.pool.shutdown()

    def _conn(self, url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(url.hostname, url.port)
            self.local.conn = conn
        return conn

    def _request(
        self,
        method: str,
        op: str,
        params: dict[str, Any],
        body: Pieces | None = None,
        headers: dict[str, str] | None = None,
        into: Pieces | None = None,
    ) -> http.client.HTTPResponse:
        url = urllib.parse.urlsplit(
            self.s3.generate_presigned_url(op, Params={"Bucket": self.bucket, **params})
        )
        what = f"{method} {op} {params.get('Key')}"
        path = f"{url.path}?{url.query}"
        return exchange(self._conn(url), method, path, headers or {}, body, into, what)

    def put_each(self, objects: dict[str, Pieces]) -> None:
        """Each object in one PUT, all in flight at once up to the pool's
        size."""
        futures = [
            self.pool.submit(self._request, "PUT", "put_object", {"Key": key}, body=body)
            for key, body in objects.items()
        ]
        for f in futures:
            f.result()

    def put_multipart(self, key: str, parts: list[Pieces]) -> None:
        """One object of `parts`, in order, as a multipart upload: the parts
        in flight at once up to the pool's size, then the completion, which
        on s3s-fs rewrites the whole object (it concatenates the parts)."""
        upload = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

        def put_part(number: int, body: Pieces) -> dict[str, Any]:
            params = {"Key": key, "UploadId": upload, "PartNumber": number}
            resp = self._request("PUT", "upload_part", params, body=body)
            return {"PartNumber": number, "ETag": resp.getheader("ETag")}

        futures = [self.pool.submit(put_part, i + 1, body) for i, body in enumerate(parts)]
        done = [f.result() for f in futures]
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
        )

    def get_all(self, objects: dict[str, list[Pieces]]) -> None:
        """Ranged GETs filling each object's runs (consecutive from byte 0),
        all in flight at once up to the pool's size."""

        def get(key: str, offset: int, into: Pieces) -> None:
            end = offset + sum(len(p) for p in into) - 1
            self._request(
                "GET",
                "get_object",
                {"Key": key},
                headers={"Range": f"bytes={offset}-{end}"},
                into=into,
            )

        futures = []
        for key, runs in objects.items():
            offset = 0
            for into in runs:
                futures.append(self.pool.submit(get, key, offset, into))
                offset += sum(len(p) for p in into)
        for f in futures:
            f.result()
