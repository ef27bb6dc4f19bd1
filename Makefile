# One command per habit, the same for a developer and for CI.
#   make install  - everything a fresh machine needs (venv, npm tools, proto stubs, engine)
#   make demo     - install, then run a csv-header job on a generated sample folder
#   make lint     - buf, cargo fmt/clippy, ruff, mypy
#   make test     - install, then cargo test and pytest (real engine, real PostgreSQL)
#   make bench    - release engine against find/fd/head and aws s3; queue vs procrastinate; 1 vs 2 engines
#   make dist     - the wheel (pravah + bundled release pravah-engine) in dist/
#   make dist-check - install dist/*.whl into a fresh venv, run a job with no PATH help
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
BUF     := tools/node_modules/.bin/buf
PROTO   := proto/pravah/engine/v1/engine.proto
PY_STUB := control_plane/pravah/engine/v1/engine_pb2.py
ENGINE_DEBUG   := target/debug/pravah-engine
ENGINE_RELEASE := target/release/pravah-engine
# apt-get through sudo where make does not run as root (CI runners).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install build-deps venv tools proto engine browser engine-release lint fmt test test-rust test-python demo bench bench-deps services lock clean dist dist-check

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

install: build-deps venv tools proto engine browser

# The venv is rebuilt when the dependency pins change. The build backend is
# maturin (see `make dist`); the editable install asks it for the dev profile,
# so it reuses target/debug (the same build `make engine` does: about 5 s when
# that is up to date) instead of a release LTO build of several minutes.
$(VENV)/.installed: pyproject.toml constraints.txt
	@# A venv cut short (no pip yet) is made again rather than used.
	test -x $(PIP) || python3 -m venv --clear $(VENV)
	$(PIP) install -q --upgrade pip
	MATURIN_PEP517_ARGS="--profile dev" $(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

tools/node_modules/.installed: tools/package.json tools/package-lock.json
	cd tools && npm ci --silent --no-audit --no-fund
	touch $@

tools: tools/node_modules/.installed

# The engine bundles libjpeg-turbo (turbojpeg-sys builds it from source and
# links it statically), which needs cmake and nasm at build time only. Before
# the venv: its editable install builds the engine.
build-deps:
	@command -v cmake >/dev/null && command -v nasm >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake nasm; } || \
		{ echo "cmake and nasm are needed to build the engine (libjpeg-turbo)"; exit 1; }

# The browser tests drive Debian's Chromium (Playwright's own browser download
# cannot work here); the dashboard itself needs no build step.
browser:
	@command -v chromium >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium; } || \
		echo "chromium not installed: the browser tests (tests/browser) will fail until it is"

# Python stubs come from the proto at build time; grpcio-tools bundles protoc.
$(PY_STUB): $(PROTO) $(VENV)/.installed scripts/gen_proto.py
	$(PY) scripts/gen_proto.py

proto: $(PY_STUB)

# The Rust side generates its code in build.rs with a vendored protoc.
engine:
	cargo build --locked -p pravah-engine

engine-release:
	cargo build --locked --release -p pravah-engine

lint: install
	$(BUF) lint
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --document-private-items -p pravah-engine
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install
	cargo fmt --all
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install test-rust test-python

test-rust:
	cargo test --locked --workspace

# PostgreSQL is started before the session on this kind of machine; start it
# if it is down so a rebooted machine still runs the whole suite.
services:
	@scripts/ensure_services.sh

# Two pytest workers (pytest-xdist), each taking whole modules so a
# module's fixtures (its PostgreSQL database, a live server) stay on one:
# the suite is mostly waiting on subprocesses, and this took it from 9 to 5
# minutes on 2 cores. Tests marked `serial` run after, in a plain pass:
# items sharing a node id (xdist would run one) and the wheel build (cargo
# unlinks and links again the engine binary other tests start).
PYTEST_WORKERS ?= 2
test-python: services
	PRAVAH_ENGINE_BIN=$(CURDIR)/$(ENGINE_DEBUG) $(VENV)/bin/pytest -q \
		-n $(PYTEST_WORKERS) --dist loadfile -m "not serial"
	PRAVAH_ENGINE_BIN=$(CURDIR)/$(ENGINE_DEBUG) $(VENV)/bin/pytest -q -m serial

demo: venv tools proto engine-release
	$(PY) scripts/make_sample.py .pravah/demo-csvs
	PRAVAH_ENGINE_BIN=$(CURDIR)/$(ENGINE_RELEASE) PRAVAH_STATE_DIR=$(CURDIR)/.pravah/state \
		$(VENV)/bin/pravah run .pravah/demo-csvs --task csv-header

bench-deps: venv
	$(PIP) install -q -c constraints.txt -r bench/requirements.txt
	@test -x /usr/bin/time || { apt-get update -qq && apt-get install -y -qq time; }
	@command -v fdfind >/dev/null || command -v fd >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq fd-find; } || \
		echo "fd-find not installed: the fd column is skipped"
	@# Anchors of the task benchmark (bench/tasks.py skips a row whose tool is missing).
	@for pkg in pigz:pigz zstd:zstd vipsthumbnail:libvips-tools bsdtar:libarchive-tools; do \
		command -v $${pkg%%:*} >/dev/null || apt-get install -y -qq $${pkg#*:} >/dev/null 2>&1 || \
		echo "$${pkg#*:} not installed: its bench row is skipped"; done

# The queue and scaling benchmarks run servers on the local PostgreSQL.
bench: venv proto engine-release bench-deps services
	PRAVAH_ENGINE_BIN=$(CURDIR)/$(ENGINE_RELEASE) $(PY) bench/run.py $(BENCH_ARGS)
	PRAVAH_ENGINE_BIN=$(CURDIR)/$(ENGINE_RELEASE) $(PY) bench/tasks.py $(BENCH_TASKS_ARGS)
	PRAVAH_ENGINE_BIN=$(CURDIR)/$(ENGINE_RELEASE) $(PY) bench/queue_throughput.py $(BENCH_QUEUE_ARGS)
	PRAVAH_ENGINE_BIN=$(CURDIR)/$(ENGINE_RELEASE) $(PY) bench/scaling.py $(BENCH_SCALING_ARGS)
	PRAVAH_ENGINE_BIN=$(CURDIR)/$(ENGINE_RELEASE) $(PY) bench/s3.py $(BENCH_S3_ARGS)

# The release wheel: the Python package, its generated gRPC stubs and the
# engine built with the release profile (fat LTO, one codegen unit), which
# also leaves target/release/pravah-engine. Version: the Cargo workspace's.
dist: build-deps venv proto
	rm -rf dist
	$(VENV)/bin/maturin build --release --locked --out dist
	@ls -l dist

# Installs the wheel into a fresh venv (dependencies from the index, pinned by
# constraints.txt) and runs a job from outside the checkout with a bare PATH.
dist-check:
	deploy/dist-check.sh dist/pravah-*.whl

# Re-pin Python dependencies after editing pyproject.toml.
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	MATURIN_PEP517_ARGS="--profile dev" .lock-venv/bin/pip install -q -e '.[dev]'
	{ echo "# Pinned versions: pip install -c constraints.txt -e '.[dev]'. Regenerate: make lock"; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .lock-venv

clean:
	cargo clean
	rm -rf $(VENV) tools/node_modules control_plane/pravah/engine .pravah bench/out
