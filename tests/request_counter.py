"""A loopback TCP relay in front of a test server that counts the
connections it accepts and the HTTP requests passing through it, by kind:
for tests that count what an operation costs the server, and for the
benchmarks' "requests per save" rows (bench/ imports it from here).

Only the client-to-server direction is parsed (request line, headers, and
the body skipped by Content-Length or chunked framing); responses are
relayed untouched. Benchmarks use it for one extra, untimed run: the timed runs
talk to the server directly.
"""

from __future__ import annotations

import collections
import re
import socket
import threading
import urllib.parse


def kind(method: str, target: str, headers: dict[str, str]) -> str:
    """A short name for one S3 or Azure Blob request."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query, keep_blank_values=True)
    copy = "x-amz-copy-source" in headers or "x-ms-copy-source" in headers
    if method == "PUT" and "partNumber" in query:
        return "UploadPartCopy" if copy else "UploadPart"
    if method == "PUT" and query.get("comp") == ["block"]:
        return "Put Block"
    if method == "PUT" and query.get("comp") == ["blocklist"]:
        return "Put Block List"
    if method == "PUT":
        return "copy (server-side)" if copy else "PUT (whole object)"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "GET" and ("list-type" in query or query.get("comp") == ["list"]):
        return "list"
    return method


_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


class CountingProxy:
    """Relays 127.0.0.1:<port> to 127.0.0.1:<upstream_port>; `counts` holds
    the requests seen, by `kind`, `accepted` the connections, `ranges` the
    byte ranges ranged GETs asked for (start, end exclusive), in the order
    they were sent."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.counts: collections.Counter[str] = collections.Counter()
        self.accepted = 0
        self.ranges: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> collections.Counter[str]:
        with self._lock:
            out, self.counts = self.counts, collections.Counter()
        return out

    def close(self) -> None:
        self._stop = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._relay, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _relay(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 20):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            while line := reader.readline():
                upstream.sendall(line)
                if not line.strip():
                    continue
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (h := reader.readline()) not in (b"\r\n", b"\n", b""):
                    upstream.sendall(h)
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                upstream.sendall(b"\r\n")
                asked = _RANGE.fullmatch(headers.get("x-ms-range") or headers.get("range") or "")
                with self._lock:
                    self.counts[kind(method, target, headers)] += 1
                    if method == "GET" and asked:
                        self.ranges.append((int(asked[1]), int(asked[2]) + 1))
                if "chunked" in headers.get("transfer-encoding", ""):
                    self._chunked(reader, upstream)
                else:
                    self._copy(reader, upstream, int(headers.get("content-length", "0")))
        except (OSError, ValueError):
            pass
        finally:
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    @staticmethod
    def _copy(reader, upstream: socket.socket, n: int) -> None:  # noqa: ANN001 - a BufferedReader
        while n > 0:
            data = reader.read(min(n, 1 << 20))
            if not data:
                raise OSError("request body ended early")
            upstream.sendall(data)
            n -= len(data)

    @classmethod
    def _chunked(cls, reader, upstream: socket.socket) -> None:  # noqa: ANN001
        while True:
            size_line = reader.readline()
            upstream.sendall(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers, then the blank line that ends the body.
                while (t := reader.readline()) not in (b"\r\n", b"\n", b""):
                    upstream.sendall(t)
                upstream.sendall(b"\r\n")
                return
            cls._copy(reader, upstream, size + 2)
