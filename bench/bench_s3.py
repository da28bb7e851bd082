"""s3dlio vs boto3 vs s3torchconnector on the same s3s-fs server and data.

In-memory put and get of every object (the checkpoint path: tensor bytes
out, tensor bytes back into a preallocated buffer). Each peer and direction
runs in its own subprocess, which reports its wall time, CPU time and peak
RSS growth; peers run interleaved, best of the rounds. A raw baseline
(parallel curl sending the same multipart parts and ranged GETs, no client
work) shows what the server itself sustains: where it is close to the
peers, the server is the limit, not the client.

The server comes from bench/report.py (bench/_servers.py): AWS_* variables
and S3DLIO_BENCH_S3_BUCKET.

    python bench/report.py --only bench_s3.py [--quick]

Full: 2 GiB (1 GiB, 512 MiB, 256 MiB, 4 x 64 MiB); --quick: 256 MiB.
Matched settings: part size and concurrency are the same for s3dlio
(storage_options) and boto3 (TransferConfig); s3torchconnector takes the
part size (its CRT client sizes its own concurrency from a throughput target).
"""

# bench-needs: s3

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _common import OUT_DIR, S3_PID_ENV, Bench
from _transfer import (
    MIB,
    RAW_CURL,
    Result,
    add,
    keep_best,
    measured,
    measured_curl,
    peer_rows,
    report,
    run_child,
    show,
    split_file,
)

FULL_SIZES = [1024, 512, 256, 64, 64, 64, 64]  # MiB, 2 GiB in all
QUICK_SIZES = [128, 64, 64]
PART = 8 * MIB
CONCURRENCY = 8
PEERS = ["s3dlio", "boto3", "s3torchconnector", "raw-curl"]
PEER_NAMES = {
    "boto3": "boto3 (upload_fileobj / download_fileobj, TransferConfig matched)",
    "s3torchconnector": "s3torchconnector 1.5.0 (S3Client, part size matched)",
    "raw-curl": "raw HTTP: parallel curl, same requests (server baseline)",
}


def server() -> tuple[str, str, str, str, str]:
    """(endpoint, access key, secret key, region, bucket) from the starter's
    environment (bench/_servers.py)."""
    try:
        return (
            os.environ["AWS_ENDPOINT_URL_S3"],
            os.environ["AWS_ACCESS_KEY_ID"],
            os.environ["AWS_SECRET_ACCESS_KEY"],
            os.environ.get("AWS_REGION", "us-east-1"),
            os.environ["S3DLIO_BENCH_S3_BUCKET"],
        )
    except KeyError as e:
        raise SystemExit(
            f"{e.args[0]} is not set: run this through `python bench/report.py "
            "--only bench_s3.py`, which starts s3s-fs"
        ) from None


# ---------------------------------------------------------------- children


def boto3_client():  # noqa: ANN201 - boto3 clients have no importable type
    import boto3

    endpoint, access_key, secret_key, region, _ = server()
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
    )


class _BufferFile(io.RawIOBase):
    """A seekable file over a caller's buffer: what boto3 needs to move the
    same bytes as the other clients, with no copy into a BytesIO."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf.cast("B")
        self.pos = 0

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else len(self.buf) + pos
        return self.pos

    def tell(self) -> int:
        return self.pos


class BufferSink(_BufferFile):
    """boto3's download writes into the preallocated destination."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = len(data)
        self.buf[self.pos : self.pos + n] = data
        self.pos += n
        return n


class BufferSource(_BufferFile):
    """boto3 uploads from the caller's memory."""

    def readable(self) -> bool:
        return True

    def readinto(self, out) -> int:
        n = min(len(out), len(self.buf) - self.pos)
        out[:n] = self.buf[self.pos : self.pos + n]
        self.pos += n
        return n


def same_as_file(buf: np.ndarray, path: str) -> bool:
    """Compare in pieces: a whole-array comparison would allocate as much
    as the object and show up in the peak RSS."""
    step = 16 * MIB
    with open(path, "rb") as f:
        for off in range(0, len(buf), step):
            if f.read(step) != buf[off : off + step].tobytes():
                return False
        return f.read(1) == b""


def make_peer(peer: str, part: int, conc: int):
    """(put(key, memoryview), get(key, writable numpy buffer)) for one peer."""
    endpoint, access_key, secret_key, region, bucket = server()
    if peer == "s3dlio":
        import s3dlio

        opts = {
            "endpoint_url": endpoint,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "region": region,
            "multipart_chunksize": str(part),
            "multipart_threshold": str(part),
            "max_concurrency": str(conc),
        }

        def put(key, data):
            s3dlio.put_bytes(f"s3://{bucket}/{key}", data, storage_options=opts)

        def get(key, out):
            s3dlio.read_into(f"s3://{bucket}/{key}", 0, out, storage_options=opts)

        return put, get
    if peer == "boto3":
        from boto3.s3.transfer import TransferConfig

        client = boto3_client()
        cfg = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=conc
        )

        def put(key, data):
            client.upload_fileobj(BufferSource(data), bucket, key, Config=cfg)

        def get(key, out):
            client.download_fileobj(bucket, key, BufferSink(memoryview(out)), Config=cfg)

        return put, get
    if peer == "s3torchconnector":
        from s3torchconnector._s3client import S3Client, S3ClientConfig

        client = S3Client(
            region,
            endpoint=endpoint,
            s3client_config=S3ClientConfig(part_size=part, force_path_style=True),
        )

        def put(key, data):
            with client.put_object(bucket, key) as w:
                w.write(data)

        def get(key, out):
            reader = client.get_object(bucket, key)
            view = memoryview(out)
            got = 0
            while got < len(view):
                n = reader.readinto(view[got:])
                if n == 0:
                    raise RuntimeError(f"short read of {key}")
                got += n

        return put, get
    raise ValueError(peer)


def curl(target: str, extra: list[str]) -> str:
    """One signed request with no payload hashing; returns the response
    headers and body."""
    endpoint, access_key, secret_key, region, bucket = server()
    cmd = [
        "curl",
        "-sS",
        "--fail",
        "-D",
        "-",
        "--aws-sigv4",
        f"aws:amz:{region}:s3",
        "--user",
        f"{access_key}:{secret_key}",
        "-H",
        "x-amz-content-sha256: UNSIGNED-PAYLOAD",
        *extra,
        f"{endpoint}/{bucket}/{target}",
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def raw_multipart(pool: ThreadPoolExecutor, key: str, parts: list[str]) -> None:
    """The request pattern of a multipart upload, with curl sending the part
    files as they are (no client-side buffering or hashing)."""
    import re

    created = curl(f"{key}?uploads=", ["-X", "POST"])
    upload_id = re.search(r"<UploadId>([^<]+)</UploadId>", created).group(1)

    def put_part(n: int, path: str) -> str:
        headers = curl(
            f"{key}?partNumber={n}&uploadId={upload_id}", ["-o", "/dev/null", "-T", path]
        )
        return re.search(r"(?im)^etag:\s*(\S+)", headers).group(1)

    etags = list(pool.map(lambda a: put_part(*a), enumerate(parts, start=1)))
    body = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
        for n, e in enumerate(etags, start=1)
    )
    curl(
        f"{key}?uploadId={upload_id}",
        [
            "-X",
            "POST",
            "--data-binary",
            f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>",
        ],
    )


def raw_curl(direction: str, objects: list[tuple[str, int, str]], part, conc, parts_of) -> None:
    """The server alone: curl sends the same requests (multipart parts of the
    same size, ranged GETs of the same size) with no client-side work, GET
    bodies going to /dev/null."""
    with ThreadPoolExecutor(conc) as pool:
        if direction == "put":
            for name, parts in parts_of.items():
                raw_multipart(pool, f"raw-curl/{name}", parts)
            return
        jobs = [
            pool.submit(
                curl,
                f"raw-curl/{name}",
                ["-o", "/dev/null", "-H", f"Range: bytes={off}-{min(off + part, size) - 1}"],
            )
            for name, size, _ in objects
            for off in range(0, size, part)
        ]
        for j in jobs:
            j.result()


def child(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer")
    ap.add_argument("--direction")
    ap.add_argument("--objects")
    args = ap.parse_args(argv)
    objects = json.loads(args.objects)
    total = sum(size for _, size, _ in objects)
    if args.peer == RAW_CURL:
        parts_of = {}
        if args.direction == "put":  # not timed, like loading the others' buffers
            scratch = pathlib.Path(objects[0][2]).parent.parent / "raw-parts"
            parts_of = {name: split_file(path, PART, scratch / name) for name, _, path in objects}
        work = lambda: raw_curl(args.direction, objects, PART, CONCURRENCY, parts_of)  # noqa: E731
        report(measured_curl(total, work))
        return
    put, get = make_peer(args.peer, PART, CONCURRENCY)
    result: Result | None = None
    for name, size, path in objects:
        key = f"{args.peer}/{name}"
        if args.direction == "put":
            src = np.fromfile(path, dtype=np.uint8)  # loading is not timed
            with measured(size) as r:
                put(key, memoryview(src))
        else:
            buf = np.empty(size, dtype=np.uint8)
            buf.fill(0)  # the destination's pages exist before timing, for every peer
            with measured(size) as r:
                get(key, buf)
            if not same_as_file(buf, path):
                raise SystemExit(f"{args.peer}: {key} came back different")
        result = add(result, r)
        src = buf = None
    assert result is not None
    report(result)


# ---------------------------------------------------------------- parent


def make_sources(src: pathlib.Path, sizes_mib: list[int]) -> list[tuple[str, int, str]]:
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, 64 * MIB, dtype=np.uint8)  # incompressible
    objects = []
    for i, mib in enumerate(sizes_mib):
        path = src / f"obj-{i}-{mib}MiB.bin"
        with open(path, "wb") as f:
            for j in range(mib // 64 or 1):
                chunk = block[: min(mib, 64) * MIB].copy()
                chunk[:16] = np.frombuffer(f"{i:07d}:{j:07d}:".encode(), dtype=np.uint8)
                f.write(chunk.tobytes())
        objects.append((path.name, path.stat().st_size, str(path)))
    return objects


def delete_prefix(prefix: str) -> None:
    bucket = server()[4]
    client = boto3_client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


def run_peer(peer: str, direction: str, objects) -> Result:
    args = ["--child", "--peer", peer, "--direction", direction, "--objects", json.dumps(objects)]
    return run_child(__file__, args, f"{peer} {direction}", S3_PID_ENV)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    bench = Bench(__doc__.splitlines()[0])
    server()  # fail early, with the reason, when the starter's variables are missing
    sizes = QUICK_SIZES if bench.quick else FULL_SIZES
    rounds = 1 if bench.quick else 2
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-s3-", dir=OUT_DIR))
    try:
        (work / "src").mkdir()
        objects = make_sources(work / "src", sizes)
        total = sum(s for _, s, _ in objects)
        print(
            f"s3s-fs at {server()[0]}; {len(objects)} objects, {total / MIB:.0f} MiB "
            f"({', '.join(f'{s // MIB}' for _, s, _ in objects)} MiB); part "
            f"{PART // MIB} MiB, concurrency {CONCURRENCY}; {os.cpu_count()} CPUs; "
            f"best of {rounds} interleaved rounds"
        )
        best: dict[tuple[str, str], Result] = {}
        for _ in range(rounds):
            # Interleaved, so a burst of load hits all alike; each peer's
            # objects are deleted after its get, so the disk holds one copy.
            for peer in PEERS:
                for direction in ("put", "get"):
                    r = run_peer(peer, direction, objects)
                    show(peer, direction, r)
                    keep_best(best, (peer, direction), r)
                delete_prefix(f"{peer}/")
        what = f"{total // MIB} MiB in {len(objects)} objects"
        for direction, verb in [("put", "put_bytes"), ("get", "read_into")]:
            peer_rows(
                bench,
                "s3",
                f"{direction} {what} ({verb})",
                best[("s3dlio", direction)],
                {peer: best[(peer, direction)] for peer in PEERS[1:]},
                PEER_NAMES,
                f"s3s-fs on 127.0.0.1; part {PART // MIB} MiB, concurrency {CONCURRENCY}; "
                f"best of {rounds}",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
