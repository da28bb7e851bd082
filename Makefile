# Two commands for a fresh machine: `make demo` and `make test`.
# Heavy downloads live in a per-user cache outside the clone (pip wheels,
# later the S3/Azure test servers), so a fresh clone sets up quickly.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE ?= $(HOME)/.cache/s3dlio
export PIP_CACHE_DIR := $(CACHE)/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Test servers, built or downloaded once per user and version, outside the clone.
TOOLS := $(CACHE)/tools
S3S_FS_VERSION := 0.14.1
S3S_FS := $(TOOLS)/s3s-fs-$(S3S_FS_VERSION)/bin/s3s-fs
AZURITE_VERSION := 3.37.0
AZURITE := $(TOOLS)/azurite-$(AZURITE_VERSION)/node_modules/.bin/azurite-blob
# Test fixtures find the servers through these.
export S3DLIO_S3S_FS := $(S3S_FS)
export S3DLIO_AZURITE := $(AZURITE)

RUST_SOURCES := Cargo.toml Cargo.lock pyproject.toml $(shell find rust -name '*.rs' -o -name Cargo.toml)

.PHONY: demo test test-rust test-python tools lint bench bench-dcp wheels clean

demo: $(VENV)/.built
	$(BIN)/python examples/demo.py

test: $(VENV)/.built tools test-rust test-python

tools: $(AZURITE)

# Azurite from npm into the per-user cache: installed into a private temp
# folder and renamed into place, so an interrupted or concurrent install
# never leaves a half-installed version behind.
$(AZURITE):
	@command -v npm >/dev/null || { echo "npm not found: install Node.js and npm (apt-get install nodejs npm)" >&2; exit 1; }
	mkdir -p $(TOOLS)
	set -e; tmp=$$(mktemp -d $(TOOLS)/.azurite-$(AZURITE_VERSION).XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	npm install --prefix "$$tmp" --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION); \
	test -x "$$tmp/node_modules/.bin/azurite-blob"; \
	mv -T "$$tmp" $(TOOLS)/azurite-$(AZURITE_VERSION) 2>/dev/null || true
	test -x $(AZURITE)

# s3s-fs, the S3 test server: built once per user and version (a few minutes).
# Installed into a private temp root, then renamed into place, so an
# interrupted or concurrent build never leaves a half-installed server behind.
tools: $(S3S_FS)
$(S3S_FS):
	mkdir -p $(TOOLS)
	tmp=$$(mktemp -d $(TOOLS)/.s3s-fs-$(S3S_FS_VERSION).XXXXXX) && \
	  { cargo install s3s-fs --version $(S3S_FS_VERSION) --locked --features binary \
	      --root $$tmp --quiet || { rm -rf $$tmp; exit 1; }; } && \
	  { mv -T $$tmp $(TOOLS)/s3s-fs-$(S3S_FS_VERSION) 2>/dev/null || rm -rf $$tmp; }
	test -x $@

# cargo test shares the release build of the core with `maturin develop`.
# The Python crate's unit tests (the TF plugin's op guard, listings, names)
# run here too: they link libpython like any pyo3 0.30 test binary.
test-rust: $(VENV)/.built tools
	cargo test --release --locked -p s3dlio-core -p s3dlio-cli
	cargo test --release --locked -p s3dlio-python --lib

test-python: $(VENV)/.built tools
	$(BIN)/python -m pytest -q tests

lint: $(VENV)/.built
	cargo fmt --all --check
	cargo clippy --release --locked --all-targets -- -D warnings
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# PyTorch DCP against torch's storage layer and s3torchconnector alone
# (not part of `make test`); QUICK=1 for a small run. The report goes to
# bench/out/results-only.md (results-quick.md with QUICK=1), never over
# the committed full bench/results.md.
bench-dcp: $(VENV)/.built $(VENV)/.bench-installed tools
	$(BIN)/python bench/report.py --only bench_dcp.py $(if $(filter-out 0,$(QUICK)),--quick)

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

# Rebuilt only when Rust sources or the packaging change; Python sources are
# linked into the venv by `maturin develop`, so edits need no rebuild.
$(VENV)/.built: $(VENV)/.installed $(RUST_SOURCES)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin develop --release --locked -q
	touch $@

# Benchmarks against the peers (not part of `make test`): every
# bench/bench_*.py, one report in bench/results.md with charts in
# bench/charts/. `make bench QUICK=1` is a ~2-minute version written to
# bench/out/results-quick.md. Scripts that need the S3/Azure test servers
# get them started by bench/report.py (hook: bench/_servers.py).
bench: $(VENV)/.built $(VENV)/.bench-installed tools
	$(BIN)/python bench/report.py $(if $(filter-out 0,$(QUICK)),--quick)

$(VENV)/.bench-installed: bench/requirements.txt bench/requirements-nodeps.txt $(VENV)/.installed
	$(BIN)/pip install -q -r bench/requirements.txt
	$(BIN)/pip install -q --no-deps -r bench/requirements-nodeps.txt
	touch $@

# Release wheels into dist/ (not part of `make test`): one cp311-abi3 wheel
# for CPython 3.11+ and one cp310 wheel, manylinux2014 x86_64 (zig links
# against glibc 2.17, so no library of this machine's leaks in; maturin's
# own audit and `auditwheel show` check it), plus the sdist. Then each wheel
# is installed into a clean venv of every CPython 3.10-3.13 found (pyenv or
# PATH) and smoke-checked there (tests/wheel_check.py).
PYENV_ROOT ?= $(HOME)/.pyenv
# CPython X.Y for maturin: pyenv's newest patch release, else pythonX.Y on PATH.
python_for = $(or $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)))),python$(1))
WHEEL_BUILD = PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin build --release --locked --zig \
	--target x86_64-unknown-linux-gnu \
	--compatibility manylinux2014 --out dist

wheels: $(VENV)/.wheel-tools
	rm -f dist/s3dlio-*.whl dist/s3dlio-*.tar.gz
	$(WHEEL_BUILD) --features abi3 --interpreter $(call python_for,3.11)
	$(WHEEL_BUILD) --interpreter $(call python_for,3.10)
	$(BIN)/maturin sdist --out dist
	for w in dist/s3dlio-*.whl; do $(BIN)/auditwheel show "$$w" || exit 1; done
	$(BIN)/python tests/wheel_check.py dist target/wheel-check 3.10 3.11 3.12 3.13
	ls -l dist

$(VENV)/.wheel-tools: requirements-wheels.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-wheels.txt
	touch $@

clean:
	rm -rf $(VENV) target dist
