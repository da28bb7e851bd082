"""s3dlio vs boto3 vs s3torchconnector on the same s3s-fs server and data.

One run, in-memory put and get of every object (the checkpoint path: tensor
bytes out, tensor bytes back into a preallocated buffer). Each peer and
direction runs in its own subprocess, which reports its wall time and peak
RSS (VmHWM). A raw baseline (parallel curl, no client work) shows what the
server itself sustains: where it is close to the peers, the server is the
limit, not the client.

    python bench/bench_s3.py            # 2 GiB: 1 GiB, 512 MiB, 256 MiB, 4 x 64 MiB
    python bench/bench_s3.py --quick    # 256 MiB: 128 MiB, 2 x 64 MiB

Matched settings: part size and concurrency are the same for s3dlio
(storage_options) and boto3 (TransferConfig); s3torchconnector takes the
part size (its CRT client sizes its own concurrency from a throughput target).
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
ACCESS_KEY = "bench-access-key"
SECRET_KEY = "bench-secret-key"
REGION = "us-east-1"
BUCKET = "bench"
MIB = 1 << 20
FULL_SIZES = [1024, 512, 256, 64, 64, 64, 64]  # MiB, 2 GiB in all
QUICK_SIZES = [128, 64, 64]
PEERS = ["s3dlio", "boto3", "s3torchconnector", "raw-curl"]


# ---------------------------------------------------------------- children


def cpu_seconds() -> float:
    """CPU time of this process so far (all threads)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class BufferSink(io.RawIOBase):
    """A seekable writable file over a preallocated buffer, so boto3's
    download writes into the destination like the others (no BytesIO growth)."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else len(self.buf) + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def write(self, data) -> int:
        n = len(data)
        self.buf[self.pos : self.pos + n] = data
        self.pos += n
        return n


class BufferSource(io.RawIOBase):
    """A seekable readable file over a buffer, so boto3 uploads from the
    caller's memory like the others (io.BytesIO would copy it first)."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf.cast("B")
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else len(self.buf) + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

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


def make_peer(peer: str, endpoint: str, part: int, conc: int):
    """(put(key, memoryview), get(key, writable numpy buffer)) for one peer."""
    if peer == "s3dlio":
        import s3dlio

        opts = {
            "endpoint_url": endpoint,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "region": REGION,
            "multipart_chunksize": str(part),
            "multipart_threshold": str(part),
            "max_concurrency": str(conc),
        }

        def put(key, data):
            s3dlio.put_bytes(f"s3://{BUCKET}/{key}", data, storage_options=opts)

        def get(key, out):
            s3dlio.read_into(f"s3://{BUCKET}/{key}", 0, out, storage_options=opts)

        return put, get
    if peer == "boto3":
        import boto3
        from boto3.s3.transfer import TransferConfig

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        cfg = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=conc
        )

        def put(key, data):
            client.upload_fileobj(BufferSource(data), BUCKET, key, Config=cfg)

        def get(key, out):
            client.download_fileobj(BUCKET, key, BufferSink(memoryview(out)), Config=cfg)

        return put, get
    if peer == "s3torchconnector":
        os.environ.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION
        )
        from s3torchconnector._s3client import S3Client, S3ClientConfig

        client = S3Client(
            REGION,
            endpoint=endpoint,
            s3client_config=S3ClientConfig(part_size=part, force_path_style=True),
        )

        def put(key, data):
            with client.put_object(BUCKET, key) as w:
                w.write(data)

        def get(key, out):
            reader = client.get_object(BUCKET, key)
            view = memoryview(out)
            got = 0
            while got < len(view):
                n = reader.readinto(view[got:])
                if n == 0:
                    raise RuntimeError(f"short read of {key}")
                got += n

        return put, get
    raise ValueError(peer)


def curl(endpoint: str, target: str, extra: list[str]) -> str:
    """One signed request with no payload hashing; returns the response
    headers and body."""
    cmd = [
        "curl",
        "-sS",
        "--fail",
        "-D",
        "-",
        "--aws-sigv4",
        f"aws:amz:{REGION}:s3",
        "--user",
        f"{ACCESS_KEY}:{SECRET_KEY}",
        "-H",
        "x-amz-content-sha256: UNSIGNED-PAYLOAD",
        *extra,
        f"{endpoint}/{BUCKET}/{target}",
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def split_parts(path: str, size: int, part: int, into: pathlib.Path) -> list[str]:
    """The source cut into part files beforehand (curl uploads whole files)."""
    into.mkdir(parents=True, exist_ok=True)
    out = []
    with open(path, "rb") as f:
        for n, _ in enumerate(range(0, size, part), start=1):
            p = into / f"part-{n}"
            p.write_bytes(f.read(part))
            out.append(str(p))
    return out


def raw_multipart(pool: ThreadPoolExecutor, endpoint: str, key: str, parts: list[str]) -> None:
    """The request pattern of a multipart upload, with curl sending the part
    files as they are (no client-side buffering or hashing)."""
    import re

    created = curl(endpoint, f"{key}?uploads=", ["-X", "POST"])
    upload_id = re.search(r"<UploadId>([^<]+)</UploadId>", created).group(1)

    def put_part(n: int, path: str) -> str:
        headers = curl(
            endpoint, f"{key}?partNumber={n}&uploadId={upload_id}", ["-o", "/dev/null", "-T", path]
        )
        return re.search(r"(?im)^etag:\s*(\S+)", headers).group(1)

    etags = list(pool.map(lambda a: put_part(*a), enumerate(parts, start=1)))
    body = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
        for n, e in enumerate(etags, start=1)
    )
    curl(
        endpoint,
        f"{key}?uploadId={upload_id}",
        [
            "-X",
            "POST",
            "--data-binary",
            f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>",
        ],
    )


def raw_curl(
    direction: str, endpoint: str, objects: list[tuple[str, int, str]], part, conc, parts_of
):
    """The server alone: curl sends the same requests (multipart parts of the
    same size, ranged GETs of the same size) with no client-side work, GET
    bodies going to /dev/null."""
    with ThreadPoolExecutor(conc) as pool:
        if direction == "put":
            for name, parts in parts_of.items():
                raw_multipart(pool, endpoint, f"raw-curl/{name}", parts)
            return
        jobs = [
            pool.submit(
                curl,
                endpoint,
                f"raw-curl/{name}",
                ["-o", "/dev/null", "-H", f"Range: bytes={off}-{min(off + part, size) - 1}"],
            )
            for name, size, _ in objects
            for off in range(0, size, part)
        ]
        for j in jobs:
            j.result()


def child(args: argparse.Namespace) -> None:
    objects = json.loads(args.objects)
    total = sum(size for _, size, _ in objects)
    if args.peer == "raw-curl":
        parts_of = {}
        if args.direction == "put":  # not timed, like loading the others' buffers
            scratch = pathlib.Path(objects[0][2]).parent.parent / "raw-parts"
            parts_of = {
                name: split_parts(path, size, args.part, scratch / name)
                for name, size, path in objects
            }
        start, cpu0 = time.perf_counter(), cpu_seconds()
        raw_curl(args.direction, args.endpoint, objects, args.part, args.concurrency, parts_of)
        elapsed = time.perf_counter() - start
        # The work is in the curl children: count their CPU, not ours.
        import resource

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = r.ru_utime + r.ru_stime + cpu_seconds() - cpu0
        report(elapsed, cpu, total)
        return
    put, get = make_peer(args.peer, args.endpoint, args.part, args.concurrency)
    elapsed = cpu = 0.0
    for name, size, path in objects:
        key = f"{args.peer}/{name}"
        if args.direction == "put":
            src = np.fromfile(path, dtype=np.uint8)  # loading is not timed
            start, cpu0 = time.perf_counter(), cpu_seconds()
            put(key, memoryview(src))
        else:
            buf = np.empty(size, dtype=np.uint8)
            start, cpu0 = time.perf_counter(), cpu_seconds()
            get(key, buf)
        elapsed += time.perf_counter() - start
        cpu += cpu_seconds() - cpu0
        if args.direction == "get" and not same_as_file(buf, path):
            raise SystemExit(f"{args.peer}: {key} came back different")
        src = buf = None
    report(elapsed, cpu, total)


def report(seconds: float, cpu: float, total: int) -> None:
    print(
        json.dumps({"seconds": seconds, "cpu": cpu, "bytes": total, "peak_rss_mib": peak_rss_mib()})
    )


# ---------------------------------------------------------------- parent


def s3s_fs_binary() -> str:
    path = os.environ.get("S3DLIO_S3S_FS") or str(
        pathlib.Path.home() / ".cache/s3dlio/tools/s3s-fs-0.14.1/bin/s3s-fs"
    )
    if not os.path.isfile(path):
        raise SystemExit(f"s3s-fs not found at {path}: run `make tools`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_server(data: pathlib.Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [s3s_fs_binary(), "--host", "127.0.0.1", "--port", str(port)]
        + ["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("s3s-fs exited at start") from None
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("s3s-fs did not start")


def create_bucket(endpoint: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    ).create_bucket(Bucket=BUCKET)


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


def run_child(peer: str, direction: str, endpoint: str, objects, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--peer",
        peer,
        "--direction",
        direction,
        "--endpoint",
        endpoint,
        "--objects",
        json.dumps(objects),
        "--part",
        str(args.part),
        "--concurrency",
        str(args.concurrency),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256 MiB instead of 2 GiB")
    ap.add_argument("--part", type=int, default=8 * MIB, help="part size, bytes")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--scratch", help="work directory (default: target/ of this repo)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--direction", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--objects", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    peers = [p for p in args.peers.split(",") if p]
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    base = pathlib.Path(args.scratch) if args.scratch else ROOT / "target"
    base.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-s3-", dir=base))
    proc = None
    try:
        (work / "src").mkdir()
        (work / "data").mkdir()
        objects = make_sources(work / "src", sizes)
        total = sum(s for _, s, _ in objects)
        proc, endpoint = start_server(work / "data")
        create_bucket(endpoint)
        print(
            f"s3s-fs at {endpoint}; {len(objects)} objects, {total / MIB:.0f} MiB "
            f"({', '.join(f'{s // MIB}' for _, s, _ in objects)} MiB); part "
            f"{args.part // MIB} MiB, concurrency {args.concurrency}; "
            f"{os.cpu_count()} CPUs"
        )
        results: dict[tuple[str, str], dict] = {}
        for direction in ("put", "get"):
            for peer in peers:
                r = run_child(peer, direction, endpoint, objects, args)
                results[(peer, direction)] = r
                if "error" in r:
                    print(f"  {direction:3} {peer:17} FAILED: {r['error']}")
                else:
                    mbps = r["bytes"] / MIB / r["seconds"]
                    print(
                        f"  {direction:3} {peer:17} {r['seconds']:7.2f} s "
                        f"{mbps:8.1f} MiB/s  client CPU {r['cpu']:6.2f} s  "
                        f"peak RSS {r['peak_rss_mib']:7.0f} MiB"
                    )
        print("\nratios (s3dlio throughput / peer throughput; > 1 means s3dlio is faster)")
        for direction in ("put", "get"):
            ours = results.get(("s3dlio", direction), {})
            for peer in peers:
                theirs = results.get((peer, direction), {})
                if peer == "s3dlio" or "seconds" not in ours or "seconds" not in theirs:
                    continue
                ratio = theirs["seconds"] / ours["seconds"]
                print(f"  {direction:3} s3dlio / {peer:17} {ratio:5.2f}x")
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
