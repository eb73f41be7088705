#!/usr/bin/env bash
# Run every fuzz target for N seconds each (default 60): the postgres_ffi WAL
# decoder, and the wire-protocol parsers of zenith_utils (startup packets,
# frontend messages, backend messages, replication messages), and the
# walkeeper's (consensus protocol messages, control file).
# Installs cargo-fuzz when missing. Uses RUSTC_BOOTSTRAP so that the stable
# toolchain can build with the sanitizer flags cargo-fuzz needs.
# FUZZ_TARGETS="fe_message be_message" limits the run to some targets.
set -euo pipefail
SECONDS_TO_RUN="${1:-60}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
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
export RUSTC_BOOTSTRAP=1

# crate directory : target
ALL_TARGETS=(
    postgres_ffi/fuzz:wal_decoder
    zenith_utils/fuzz:fe_startup
    zenith_utils/fuzz:fe_message
    zenith_utils/fuzz:be_message
    zenith_utils/fuzz:replication_message
    zenith_utils/fuzz:scram
    zenith_utils/fuzz:jwt
    walkeeper/fuzz:walkeeper_message
    walkeeper/fuzz:control_file
    proxy/fuzz:routing
)

seed_corpus() {
    local target="$1" corpus="$2"
    [ -z "$(ls -A "$corpus")" ] || return 0
    case "$target" in
    wal_decoder)
        # Slices of real WAL, each prefixed by a chunk-size byte.
        python3 - "$ROOT/postgres_ffi/testdata/initdb_wal_head.zst" "$corpus" <<'PY'
import subprocess, sys, os
wal = subprocess.run(["zstd", "-dc", sys.argv[1]], check=True, capture_output=True).stdout
for i, size in enumerate([8192, 16384, 3 * 8192, 65536]):
    with open(os.path.join(sys.argv[2], f"seed{i}"), "wb") as f:
        f.write(bytes([i * 50]) + wal[:size])
PY
        ;;
    fe_startup)
        # psql's StartupMessage, an SSLRequest then a StartupMessage, a CancelRequest.
        printf '\x07\x00\x00\x00\x20\x00\x03\x00\x00user\x00alice\x00database\x00db\x00\x00' > "$corpus/psql"
        printf '\x03\x00\x00\x00\x08\x04\xd2\x16\x2f\x00\x00\x00\x11\x00\x03\x00\x00user\x00u\x00\x00' > "$corpus/ssl"
        printf '\x00\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x01\x00\x00\x00\x02' > "$corpus/cancel"
        ;;
    fe_message)
        printf 'Q\x00\x00\x00\x0dSELECT 1\x00d\x00\x00\x00\x07abcc\x00\x00\x00\x04X\x00\x00\x00\x04' > "$corpus/query_copy"
        printf 'p\x00\x00\x00\x23SCRAM-SHA-256\x00\x00\x00\x00\x0dn,,n=,r=abcde' > "$corpus/sasl"
        ;;
    be_message)
        printf 'R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x19client_encoding\x00UTF8\x00Z\x00\x00\x00\x05I' > "$corpus/startup"
        printf 'T\x00\x00\x00\x1a\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x011C\x00\x00\x00\x0dSELECT 1\x00' > "$corpus/rows"
        printf 'E\x00\x00\x00\x20SERROR\x00VERROR\x00C42601\x00Moops\x00\x00W\x00\x00\x00\x07\x00\x00\x00d\x00\x00\x00\x07abc' > "$corpus/error_copy"
        ;;
    replication_message)
        printf 'w\x00\x00\x00\x01\x00\x00\x00\x28\x00\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x03\x09WAL!' > "$corpus/xlogdata"
        printf 'k\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x01' > "$corpus/keepalive"
        ;;
    walkeeper_message)
        # A ProposerGreeting and a VoteRequest (direction byte 0), a
        # VoteResponse (direction byte 1).
        python3 - "$corpus" <<'PY'
import struct, sys, os
g = struct.pack("<Q", ord("g")) + struct.pack("<II", 1, 150002) + bytes(16) + struct.pack("<Q", 42) + bytes(range(16)) + bytes(range(16, 32)) + struct.pack("<II", 1, 16 << 20)
v = struct.pack("<QQ", ord("v"), 3) + bytes(16)
r = struct.pack("<QQQQQ", ord("v"), 3, 1, 0x1000028, 0) + struct.pack("<I", 1) + struct.pack("<QQ", 2, 0x1000028) + struct.pack("<Q", 0x1000028)
for name, data in [("greeting", b"\0" + g), ("vote", b"\0" + v), ("vote_response", b"\1" + r)]:
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.write(data)
PY
        ;;
    scram)
        printf '\x40n,,n=,r=abcdefc=biws,r=abcdef,p=AAAA' > "$corpus/plain"
        printf '\xc3p=tls-server-end-point,,n=,r=abcdefc=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=x,p=AAAA' > "$corpus/plus"
        ;;
    jwt)
        printf 'Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzY29wZSI6InRlbmFudCJ9.AAAA' > "$corpus/bearer"
        ;;
    routing)
        printf '\x14ep1.zenith.localhostendpoint=ep2 -c a=b' > "$corpus/sni_options"
        printf '\x00endpoint=ep1;s3cret' > "$corpus/password"
        ;;
    control_file)
        printf 'ZWKC\x01\x00\x00\x00\x02\x00\x00\x00{}\x00\x00\x00\x00' > "$corpus/empty_json"
        ;;
    esac
}

selected="${FUZZ_TARGETS:-}"
for entry in "${ALL_TARGETS[@]}"; do
    dir="${entry%%:*}"
    target="${entry##*:}"
    if [ -n "$selected" ] && [[ " $selected " != *" $target "* ]]; then
        continue
    fi
    corpus="$ROOT/$dir/corpus/$target"
    mkdir -p "$corpus"
    seed_corpus "$target" "$corpus"
    echo "fuzz: $target for ${SECONDS_TO_RUN}s"
    log="$(mktemp)"
    if ! (cd "$ROOT/$dir" && cargo fuzz run "$target" "$corpus" -- \
        -max_total_time="$SECONDS_TO_RUN" -max_len=70000 -print_final_stats=1) >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $target failed (crash inputs in $ROOT/$dir/artifacts/$target)" >&2
        exit 1
    fi
    grep -E "^(stat::number_of_executed_units|Done)" "$log" || true
    rm -f "$log"
done
