#!/usr/bin/env bash
# `make run`: start a local Zenith cluster and print how to connect.
#
# Creates the repository (.zenith/ in the source tree, or $ZENITH_REPO_DIR) if
# there is none, starts the pageserver and the compute `main`, runs one query
# through it, and prints the psql connection string. Safe to run again: what
# is already running is left as it is. $ZENITH_INIT_CONFIG may name a TOML
# file for `zenith init --config` (ports, paths).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ZENITH="$ROOT/target/release/zenith"
PSQL="$ROOT/tmp_install/bin/psql"
export ZENITH_REPO_DIR="${ZENITH_REPO_DIR:-$ROOT/.zenith}"
export LD_LIBRARY_PATH="$ROOT/tmp_install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ ! -f "$ZENITH_REPO_DIR/config" ]; then
    "$ZENITH" init ${ZENITH_INIT_CONFIG:+--config "$ZENITH_INIT_CONFIG"}
fi
if "$ZENITH" status | grep -q '^pageserver: running'; then
    echo "pageserver already running"
else
    "$ZENITH" start
fi
if "$ZENITH" pg list | grep -Eq '^main +main .* running '; then
    echo "compute main already running"
else
    "$ZENITH" pg start main
fi
CONNSTR="$("$ZENITH" pg list | awk '$1 == "main" { print $NF }')"
echo
echo "Checking the compute with one query:"
ZENITH_ALLOW_ROOT=1 "$PSQL" -X "$CONNSTR" -c "SELECT 'Zenith is running' AS status, version()"
cat <<MSG
A local Zenith cluster is running (repository: $ZENITH_REPO_DIR).

Connect with:
    $PSQL $CONNSTR

Then, for example:
    $ZENITH branch dev main                 # a branch of main, as of now
    $ZENITH pg start dev_node --branch dev  # a compute on it
    $ZENITH pg list                         # computes and their psql strings
    $ZENITH status                          # daemons and branches
    $ZENITH stop                            # stop everything

The computes run from a full basebackup of their branch and keep their data directory;
the pageserver follows each read-write compute's WAL (see docs/zenith_cli.md).
MSG
