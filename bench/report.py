"""Run every bench/bench_*.py and write one report: a Markdown table per
group (operation, ours, peer, ours/peer, peak RSS of each) and PNG charts.

    python bench/report.py            # full run  -> bench/results.md, bench/charts/
    python bench/report.py --quick    # ~2 minutes -> bench/out/results-quick.md
    python bench/report.py --only bench_compression.py   # -> bench/out/results-only.md

`make bench` / `make bench QUICK=1` run this. Every number in a report was
measured in that run; the format the scripts write is in bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time
from collections import defaultdict

from _common import BENCH_DIR, OUT_DIR, Row, fmt
from _servers import Unavailable, needs, started

ROOT = BENCH_DIR.parent

# Peers the report should eventually cover: (name, word that marks it in a
# row's peer_name, where it comes from).
EXPECTED_PEERS = [
    ("zipnn", "zipnn", "bench_compression.py"),
    ("torch FileSystemWriter/Reader", "filesystem", "bench_dcp.py"),
    ("s3torchconnector", "s3torchconnector", "bench_s3.py / bench_dcp.py"),
    ("boto3", "boto3", "bench_s3.py"),
    ("azure-storage-blob", "azure-storage-blob", "bench_azure.py"),
    ("azstoragetorch BlobIO", "azstoragetorch", "bench_azure.py"),
    ("Orbax StandardCheckpointer", "orbax", "bench_frameworks.py"),
    ("TensorFlow's own checkpoint", "tf.train.checkpoint", "bench_frameworks.py"),
]

TIE = 0.02  # ratios within 2% of 1 are reported as a tie


def sh(*cmd: str) -> str:
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, cwd=ROOT, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def mount_of(path: pathlib.Path) -> tuple[str, str]:
    """(device, filesystem type) holding `path`."""
    best, dev, fs = "", "?", "?"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            d, mnt, typ = line.split()[:3]
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best, dev, fs = mnt, d, typ
    return dev, fs


def machine() -> list[str]:
    cpu = "?"
    hypervisor = False
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and " hypervisor" in line:
                hypervisor = True
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    dev, fs = mount_of(OUT_DIR)
    import s3dlio

    commit = sh("git", "rev-parse", "--short", "HEAD") or "?"
    # The report's own outputs do not count as changes to what was measured.
    outputs = ("bench/results", "bench/charts/")
    changed = [
        line[3:]
        for line in sh("git", "status", "--porcelain", "--untracked-files=no").splitlines()
        if not line[3:].startswith(outputs)
    ]
    if changed:
        commit += ", with uncommitted changes"

    return [
        f"- CPU: {os.cpu_count()} cores ({cpu}){', virtual machine' if hypervisor else ''}",
        f"- Memory: {mem_kib / (1 << 20):.0f} GiB",
        f"- Disk for file:// and direct://: {fs} on {dev} ({OUT_DIR.relative_to(ROOT)})",
        f"- Linux {platform.release()}, Python {platform.python_version()}, "
        f"s3dlio {s3dlio.__version__} (commit {commit})",
    ]


def _count_rows(rows_path: pathlib.Path) -> int:
    if not rows_path.exists():
        return 0
    with open(rows_path) as f:
        return sum(1 for _ in f)


def run_script(
    script: pathlib.Path, rows_path: pathlib.Path, quick: bool, timeout: int
) -> tuple[str, float, str]:
    """Run one bench script; (status, seconds, detail)."""
    cmd = [sys.executable, str(script), "--out", str(rows_path)] + (["--quick"] if quick else [])
    log = OUT_DIR / "logs" / f"{script.stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    rows_before = _count_rows(rows_path)
    t = time.time()
    try:
        with started(needs(script)) as server_env:
            env = {**os.environ, **server_env, "PYTHONUNBUFFERED": "1"}
            with open(log, "w") as out:
                proc = subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=timeout
                )
    except Unavailable as e:
        return "skipped", time.time() - t, str(e)
    except subprocess.TimeoutExpired:
        return (
            "failed",
            time.time() - t,
            f"timed out after {timeout}s (log: {log.relative_to(ROOT)})",
        )
    secs = time.time() - t
    rows_after = _count_rows(rows_path)
    if proc.returncode == 0 and rows_after == rows_before:
        return (
            "no rows",
            secs,
            f"exited 0 but wrote no result rows: not in bench/_common.py's format yet? "
            f"(log: {log.relative_to(ROOT)})",
        )
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        return (
            "failed",
            secs,
            f"exit {proc.returncode}: {' / '.join(tail)} (log: {log.relative_to(ROOT)})",
        )
    return "ok", secs, ""


def better(row: Row) -> str:
    if row.ratio is None:
        return ""
    if abs(row.ratio - 1) <= TIE:
        return "tie"
    ours_better = row.ratio > 1 if row.higher_is_better else row.ratio < 1
    return "**ours**" if ours_better else "peer"


def table(rows: list[Row]) -> list[str]:
    out = [
        "| Operation | Ours | Peer | Peer's | Ours/peer | Better "
        "| Peak RSS ours (MiB) | Peak RSS peer (MiB) | Notes |",
        "|---|---:|---|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.3f}"
        unit = f" {r.unit}" if r.unit not in ("exact",) else ""
        out.append(
            f"| {r.operation} | {fmt(r.ours)}{unit} | {r.peer_name} | {fmt(r.peer)}{unit} "
            f"| {ratio} | {better(r)} | {fmt(r.ours_rss_mib)} | {fmt(r.peer_rss_mib)} "
            f"| {r.notes} |"
        )
    return out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def charts(rows: list[Row], chart_dir: pathlib.Path, md_dir: pathlib.Path) -> dict[str, list[str]]:
    """One PNG per (group, unit), at most 30 bars each: ours/peer per row,
    green where ours is better. Returns Markdown image links per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chart_dir.mkdir(parents=True, exist_ok=True)
    for old in chart_dir.glob("*.png"):
        old.unlink()
    by: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        if r.ratio is not None and r.unit != "exact":
            by[(r.group, r.unit)].append(r)
    links: dict[str, list[str]] = defaultdict(list)
    for (group, unit), rs in by.items():
        for part in range(0, len(rs), 30):
            chunk = rs[part : part + 30]
            fig, ax = plt.subplots(figsize=(10, 0.32 * len(chunk) + 1.4))
            labels = [f"{r.operation}\nvs {r.peer_name}" for r in chunk]
            ratios = [r.ratio for r in chunk]
            colors = [
                "#2a9d55"
                if better(r) == "**ours**"
                else "#c0392b"
                if better(r) == "peer"
                else "#888888"
                for r in chunk
            ]
            ax.barh(range(len(chunk)), ratios, color=colors)
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_yticks(range(len(chunk)))
            ax.set_yticklabels(labels, fontsize=6)
            ax.invert_yaxis()
            direction = "higher" if chunk[0].higher_is_better else "lower"
            ax.set_xlabel(f"ours / peer ({unit}; {direction} is better for us; green: ours better)")
            ax.set_title(f"{group}: {unit}" + (f" ({part // 30 + 1})" if len(rs) > 30 else ""))
            fig.tight_layout()
            name = (
                f"{slug(group)}-{slug(unit)}"
                + (f"-{part // 30 + 1}" if len(rs) > 30 else "")
                + ".png"
            )
            fig.savefig(chart_dir / name, dpi=110)
            plt.close(fig)
            links[group].append(f"![{group} {unit}]({os.path.relpath(chart_dir / name, md_dir)})")
    return links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", default=os.environ.get("QUICK", "") not in ("", "0")
    )
    parser.add_argument("--only", action="append", help="run only this script (repeatable)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per script")
    args = parser.parse_args()

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if args.quick or args.only:
        # Partial runs never replace the committed full report.
        name = "quick" if args.quick else "only"
        md_path, chart_dir, jsonl = (
            OUT_DIR / f"results-{name}.md",
            OUT_DIR / f"charts-{name}",
            OUT_DIR / f"results-{name}.jsonl",
        )
    else:
        md_path, chart_dir, jsonl = (
            BENCH_DIR / "results.md",
            BENCH_DIR / "charts",
            BENCH_DIR / "results.jsonl",
        )
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.name in args.only or s.stem in args.only]
    rows_path = OUT_DIR / "rows.jsonl"
    rows_path.unlink(missing_ok=True)

    started_at = datetime.datetime.now(datetime.timezone.utc)
    machine_lines = machine()
    load_before = os.getloadavg()
    statuses = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        status, secs, detail = run_script(script, rows_path, args.quick, args.timeout)
        statuses.append((script.name, status, secs, detail))
        print(f"   {status} in {secs:.0f}s {detail}", flush=True)
    load_after = os.getloadavg()

    rows = (
        [Row(**json.loads(line)) for line in rows_path.read_text().splitlines()]
        if rows_path.exists()
        else []
    )
    jsonl.write_text("".join(json.dumps(r.__dict__) + "\n" for r in rows))
    links = charts(rows, chart_dir, md_path.parent) if rows else {}

    kind = "QUICK run" if args.quick else "Partial run" if args.only else "Full run"
    command = "make bench QUICK=1" if args.quick else "make bench"
    if args.only:
        command = "bench/report.py " + " ".join(f"--only {s}" for s in args.only)
        command += " --quick" if args.quick else ""
    before = "/".join(f"{x:.1f}" for x in load_before)
    after = "/".join(f"{x:.1f}" for x in load_after)
    md = [
        "# s3dlio benchmark results",
        "",
        f"{kind} of `{command}`, {started_at:%Y-%m-%d %H:%M} UTC. Every number below was "
        "measured in this run, ours and the peer's on the same data, machine and cores; "
        "ratios are ours/peer.",
        "",
        "## Machine",
        "",
        *machine_lines,
        f"- Load average (1/5/15 min) before: {before}, after: {after}. The machine is "
        "shared: absolute numbers are noisy; contenders run interleaved so load hits them "
        "alike, and compression rows also give MB per CPU-second, which load disturbs less.",
        "",
        "## Scripts",
        "",
        "| Script | Status | Time | Detail |",
        "|---|---|---:|---|",
        *[f"| {n} | {st} | {s:.0f} s | {d} |" for n, st, s, d in statuses],
        "",
        "## Peers",
        "",
    ]
    present = " ".join(r.peer_name.lower() for r in rows)
    for peer, key, source in EXPECTED_PEERS:
        state = "measured" if key in present else f"not in this run (comes with {source})"
        md.append(f"- {peer}: {state}")
    md.append("")
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.group].append(r)
    for group, rs in groups.items():
        md += [f"## {group}", "", *table(rs), "", *links.get(group, []), ""]
    md_path.write_text("\n".join(md))
    shown = md_path.relative_to(ROOT)
    print(f"wrote {shown} ({len(rows)} rows), charts in {chart_dir.relative_to(ROOT)}")
    if any(st == "failed" for _, st, _, _ in statuses):
        sys.exit(1)


if __name__ == "__main__":
    main()
