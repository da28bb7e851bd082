#!/usr/bin/env bash
# One short GPU session: the CUDA tests of tests/test_torch_dcp.py and
# tests/test_torch_async_staging.py, and bench/bench_gpu.py, written to
# bench/results-gpu.md.
#
# Runs with the Python that has CUDA torch on that machine (PYTHON, default
# python3), in a venv that sees its packages (--system-site-packages) plus
# s3dlio from a wheel built here: `make wheels` first and bring dist/ along
# (the GPU machine may have no Rust and no network). With a built .venv
# instead (this checkout's `make .venv/.built`), USE_DEV_VENV=1 uses it.
#
#     bench/gpu_check.sh                 # 8 GiB, best of 2 (a few minutes on an H200)
#     GPU_BENCH_GIB=2 bench/gpu_check.sh # smaller
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
report=bench/results-gpu.md

if [[ "${USE_DEV_VENV:-0}" != 0 ]]; then
    py=.venv/bin/python
else
    venv=$out/gpu-venv
    "${PYTHON:-python3}" -m venv --system-site-packages --clear "$venv"
    "$venv/bin/python" -m pip install -q --no-deps --no-index --find-links dist s3dlio
    py=$venv/bin/python
fi
"$py" -c 'import sys, torch; sys.exit("no CUDA device" if not torch.cuda.is_available() else 0)'

# CUDA tests on the local backends (the S3/Azure servers are not on that machine).
tests_log=$out/gpu-tests.log
set +e
(cd "$out" && "$OLDPWD/$py" -m pytest -q -p no:cacheprovider -k "cuda and not s3 and not az" \
    "$OLDPWD/tests/test_torch_dcp.py" "$OLDPWD/tests/test_torch_async_staging.py") >"$tests_log" 2>&1
tests_rc=$?
set -e

rows=$out/gpu-rows.jsonl
rm -f "$rows"
"$py" bench/bench_gpu.py --out "$rows" | tee "$out/gpu-bench.log"

"$py" - "$rows" "$tests_log" "$tests_rc" "$report" <<'PY'
import datetime, json, pathlib, sys
sys.path.insert(0, "bench")
from _common import Row
from report import table

rows_path, log, rc, report = sys.argv[1:]
rows = [Row(**json.loads(l)) for l in pathlib.Path(rows_path).read_text().splitlines()]
summary = pathlib.Path(log).read_text().strip().splitlines()[-1:] or ["(no output)"]
now = datetime.datetime.now(datetime.timezone.utc)
md = [
    "# s3dlio on a GPU machine",
    "",
    f"`bench/gpu_check.sh`, {now:%Y-%m-%d %H:%M} UTC. Every number was measured in this run;",
    "ratios are ours/peer. The machine is in each row's notes.",
    "",
    "## CUDA tests (tests/test_torch_dcp.py and test_torch_async_staging.py -k cuda, file:// and direct://)",
    "",
    f"exit code {rc}: {summary[0]}",
    "",
    "## Rows (bench/bench_gpu.py)",
    "",
    *table(rows),
    "",
]
pathlib.Path(report).write_text("\n".join(md))
print(f"wrote {report} ({len(rows)} rows); tests exit code {rc}")
PY
exit "$tests_rc"
