"""Benchmark fixtures (see fixtures/benchmark.py for what a benchmark here does).

ZENITH_BENCH_SIZE selects the data size: "tiny" (default; what CI runs, to prove the benchmark
works) or "full" (`make bench`, for real figures)."""

import os

import pytest

BENCH_SIZES = ("tiny", "full")


@pytest.fixture
def bench_size() -> str:
    size = os.environ.get("ZENITH_BENCH_SIZE", "tiny")
    if size not in BENCH_SIZES:
        pytest.fail(f"ZENITH_BENCH_SIZE={size!r}: expected one of {BENCH_SIZES}", pytrace=False)
    return size
