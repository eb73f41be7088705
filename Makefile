# Zenith in Rust: top-level build.
#
#   make            build PostgreSQL (tmp_install/) and the Rust workspace (release)
#   make postgres   build and install the patched PostgreSQL 15 into tmp_install/
#   make test       everything CI runs: fmt, clippy, cargo tests, pytest
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

.PHONY: all postgres rust rust-testing test cargo-test lint pytest venv test-apt-deps run fuzz bench clean

all: postgres rust

postgres:
	@$(ROOT)/vendor/postgres/build.sh

rust:
	$(CARGO) build --release --bins -j $(CARGO_JOBS)

# The same binaries with failpoints compiled in (the pytest suite crashes the
# pageserver at them); only the pageserver crate is rebuilt between the two.
rust-testing:
	$(CARGO) build --release --bins -j $(CARGO_JOBS) --features pageserver/testing

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

lint:
	$(CARGO) fmt --all -- --check
	CARGO_INCREMENTAL=0 $(CARGO) clippy --all-targets -j $(CARGO_JOBS) -- -D warnings

# Incremental compilation state is several GiB and buys nothing in a one-shot
# test run.
cargo-test:
	CARGO_INCREMENTAL=0 $(CARGO) test -j $(CARGO_JOBS)

pytest: postgres rust-testing venv test-apt-deps
	cd test_runner && $(PYTHON) -m pytest $(PYTEST_ARGS)

test: postgres lint cargo-test pytest

run: all
	@$(ROOT)/scripts/run-local.sh

fuzz:
	@$(ROOT)/scripts/fuzz.sh $(FUZZ_SECONDS)

bench: all venv
	cd test_runner && ZENITH_BENCH_SIZE=full $(PYTHON) -m pytest performance -s $(PYTEST_ARGS)

clean:
	$(CARGO) clean
	rm -rf build tmp_install test_runner/output
