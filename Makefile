# Zenith in Rust: top-level build.
#
#   make            build PostgreSQL (tmp_install/) and the Rust workspace (release)
#   make postgres   build and install the patched PostgreSQL 15 into tmp_install/
#   make test       everything CI runs: fmt, clippy, rustdoc, cargo tests, pytest (CI sizes)
#   make lint       fmt, module order, clippy and rustdoc alone
#   make test-full  the full-size variants: chaos minutes, scale 100, model bounds
#   make run        build, then start a local cluster (see README)
#   make fuzz       run every fuzz target for FUZZ_SECONDS each (default 60)
#   make bench      run the benchmarks at full size
#   make clean      remove build outputs

SHELL := /bin/bash
ROOT := $(abspath .)
POSTGRES_INSTALL_DIR ?= $(ROOT)/tmp_install
VENV := $(ROOT)/.venv
PYTHON := $(VENV)/bin/python
CARGO ?= cargo
CARGO_JOBS ?= 2
FUZZ_SECONDS ?= 60
PYTEST_ARGS ?=

export POSTGRES_INSTALL_DIR

.PHONY: all postgres rust rust-testing test test-prerequisites test-full cargo-test lint lint-source doc-check pytest venv test-apt-deps run fuzz bench clean

all: postgres rust

postgres:
	@$(ROOT)/vendor/postgres/build.sh

rust:
	$(CARGO) build --release --bins -j $(CARGO_JOBS)

# What `make test` builds, once for both the cargo tests and pytest: the `ci`
# profile (release optimisation, debug assertions and overflow checks in our
# own crates) with failpoints compiled in (the pytest suite crashes the
# pageserver and stalls walkeepers at them). Its binaries are in target/ci.
TEST_PROFILE := ci
TEST_FEATURES := pageserver/testing,walkeeper/testing
TEST_BIN := $(ROOT)/target/$(TEST_PROFILE)
# pytest workers (pytest-xdist): the suite mostly waits on fsyncs, sockets
# and child processes, so more workers than cores pay off; measured on 2
# cores: 3 workers 16.5 min, 4 workers slower (the I/O of the page-heavy
# tests, pg_regress with 1MB of shared buffers above all, is the limit).
PYTEST_WORKERS ?= 3

# `cargo test --no-run` rather than `cargo build`: the same feature resolution
# as the cargo tests (dev-dependencies included), so `make test` compiles each
# crate once; every crate with a binary has an integration test, so every
# binary is built. The build is also the clippy pass: clippy-driver compiles
# the workspace's own crates (dependencies get plain rustc, their lints capped)
# and -D warnings fails the build on any rustc or clippy warning, as
# `cargo clippy --all-targets -- -D warnings` would, without a second
# compilation of the workspace. MAKEFLAGS is cleared so that cargo runs its
# own -j$(CARGO_JOBS) rather than sharing the jobserver of `make test`.
CLIPPY_DRIVER = $(shell command -v clippy-driver)
CARGO_CI = MAKEFLAGS= MFLAGS= CARGO_INCREMENTAL=0 RUSTC_WORKSPACE_WRAPPER=$(CLIPPY_DRIVER) RUSTFLAGS="-D warnings" $(CARGO)

rust-testing:
	@test -n "$(CLIPPY_DRIVER)" || { echo "clippy-driver not found: rustup component add clippy" >&2; exit 1; }
	$(CARGO_CI) test --profile $(TEST_PROFILE) --no-run -j $(CARGO_JOBS) --features $(TEST_FEATURES)

venv: $(VENV)/.requirements-stamp

$(VENV)/.requirements-stamp: test_runner/requirements.txt
	@$(ROOT)/scripts/ensure-python-venv.sh $(VENV) test_runner/requirements.txt
	@touch $@

# Debian packages only the pytest suite needs: headless Chromium and its WebDriver for the browser
# tests (test_runner/fixtures/browser.py); Prometheus (with promtool) and the PostgreSQL exporter
# for the monitoring tests (test_runner/test_monitoring.py, `zenith monitoring start`). Installed
# as root when missing, else a hint.
TEST_APT_PACKAGES := chromium chromium-driver prometheus prometheus-postgres-exporter

test-apt-deps:
	@missing=$$(for p in $(TEST_APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	        echo "installing test dependencies:" $$missing; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else \
	        echo "missing test dependencies:" $$missing "(apt-get install them and run make again)" >&2; \
	        exit 1; \
	    fi; \
	fi

# The checks that need no build: formatting and the import order of modules.
lint-source:
	$(CARGO) fmt --all -- --check
	@$(ROOT)/scripts/module-cycles.py

# Intra-doc links must resolve (libraries, private items included; the
# binaries' doc comments are their --help texts, not rustdoc).
doc-check:
	RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links -A rustdoc::private_intra_doc_links" \
	    CARGO_INCREMENTAL=0 $(CARGO) doc --no-deps --workspace --lib --document-private-items -j $(CARGO_JOBS)

# Everything `make test` checks without running tests, for a developer (a
# check build of its own, unlike `make test`'s clippy pass in its build).
lint: lint-source
	CARGO_INCREMENTAL=0 $(CARGO) clippy --all-targets -j $(CARGO_JOBS) -- -D warnings
	$(MAKE) --no-print-directory doc-check

# The S3 tests of remote_storage run against moto's server from the venv.
cargo-test: rust-testing venv
	ZENITH_MOTO_SERVER=$(VENV)/bin/moto_server \
	    $(CARGO_CI) test --profile $(TEST_PROFILE) -j $(CARGO_JOBS) --features $(TEST_FEATURES)

pytest: postgres rust-testing venv test-apt-deps
	cd test_runner && ZENITH_BIN=$(TEST_BIN) $(PYTHON) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# `make test`, in three steps that keep both cores busy (measured on 2 cores:
# each build alone leaves one core idle at times):
# 1. the source checks, then side by side the Rust build (with clippy) and,
#    one after the other (they may all run apt-get, which takes one lock),
#    the test packages, the venv and PostgreSQL;
# 2. the cargo tests;
# 3. the pytest suite, with the rustdoc check beside it at the lowest CPU
#    priority (one line after pytest's slowest tests; its log if it failed).
TEST_LOG_DIR := $(ROOT)/target/test-logs
test-prerequisites:
	@$(MAKE) --no-print-directory test-apt-deps
	@$(MAKE) --no-print-directory venv
	@$(MAKE) --no-print-directory postgres

test: lint-source
	@$(MAKE) --no-print-directory -j2 test-prerequisites rust-testing
	@$(MAKE) --no-print-directory cargo-test
	@mkdir -p $(TEST_LOG_DIR); \
	( nice -n 19 $(MAKE) --no-print-directory doc-check > $(TEST_LOG_DIR)/doc-check.log 2>&1; \
	  echo $$? > $(TEST_LOG_DIR)/doc-check.rc ) & \
	$(MAKE) --no-print-directory pytest; rc=$$?; wait; \
	if [ "$$(cat $(TEST_LOG_DIR)/doc-check.rc)" != 0 ]; then \
	    cat $(TEST_LOG_DIR)/doc-check.log; echo "rustdoc check failed" >&2; exit 1; fi; \
	echo "rustdoc check (beside pytest): passed"; \
	exit $$rc

# What `make test` runs at CI size, at full size: the walkeeper ledger chaos
# for 10 minutes, the pageserver scale test at scale 100, the pages and
# stateless-compute checks at their full sizes, and the walkeeper model check
# at the design's bounds with commit hints (minutes of CPU each).
FULL_CHAOS_SECONDS ?= 600
test-full: postgres rust-testing venv test-apt-deps
	ZENITH_MODEL_TERMS=3 ZENITH_MODEL_ENTRIES=3 ZENITH_MODEL_COMMIT_HINTS=1 \
	    $(CARGO_CI) test --profile $(TEST_PROFILE) -j $(CARGO_JOBS) --features $(TEST_FEATURES) \
	    -p walkeeper --lib model -- --ignored
	cd test_runner && ZENITH_BIN=$(TEST_BIN) ZENITH_BENCH_SIZE=full \
	    ZENITH_TEST_CHAOS_SECONDS=$(FULL_CHAOS_SECONDS) \
	    $(PYTHON) -m pytest -n $(PYTEST_WORKERS) --ignore=performance $(PYTEST_ARGS)

# `make run` builds the release binaries and runs them. ZENITH_RUN_BIN=DIR
# runs prebuilt binaries from DIR instead: the pytest suite's test of `make
# run` passes the binaries it tests rather than building a second profile.
ZENITH_RUN_BIN ?=
ifeq ($(ZENITH_RUN_BIN),)
run: all
	@$(ROOT)/scripts/run-local.sh
else
run: postgres
	@ZENITH_RUN_BIN=$(ZENITH_RUN_BIN) $(ROOT)/scripts/run-local.sh
endif

fuzz:
	@$(ROOT)/scripts/fuzz.sh $(FUZZ_SECONDS)

bench: all venv
	cd test_runner && ZENITH_BENCH_SIZE=full $(PYTHON) -m pytest performance -s $(PYTEST_ARGS)

clean:
	$(CARGO) clean
	rm -rf build tmp_install test_runner/output
