#!/usr/bin/env bash
# Run the postgres_ffi WAL decoder fuzz target for N seconds (default 60).
# Installs cargo-fuzz when missing. Uses RUSTC_BOOTSTRAP so that the stable
# toolchain can build with the sanitizer flags cargo-fuzz needs.
set -euo pipefail
SECONDS_TO_RUN="${1:-60}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT/postgres_ffi/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
if ! command -v zstd >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null
    else
        echo "fuzz: the zstd command is missing (apt-get install zstd)" >&2; exit 1
    fi
fi
CORPUS="$ROOT/postgres_ffi/fuzz/corpus/wal_decoder"
mkdir -p "$CORPUS"
if [ -z "$(ls -A "$CORPUS")" ]; then
    # Seed with slices of real WAL, each prefixed by a chunk-size byte.
    python3 - "$ROOT/postgres_ffi/testdata/initdb_wal_head.zst" "$CORPUS" <<'PY'
import subprocess, sys, os
wal = subprocess.run(["zstd", "-dc", sys.argv[1]], check=True, capture_output=True).stdout
for i, size in enumerate([8192, 16384, 3 * 8192, 65536]):
    with open(os.path.join(sys.argv[2], f"seed{i}"), "wb") as f:
        f.write(bytes([i * 50]) + wal[:size])
PY
fi
export RUSTC_BOOTSTRAP=1
exec cargo fuzz run wal_decoder "$CORPUS" -- -max_total_time="$SECONDS_TO_RUN" -max_len=70000
