#!/usr/bin/env bash
# `make run`: start a local Zenith cluster and print how to connect.
#
# Creates the repository (.zenith/ in the source tree, or $ZENITH_REPO_DIR) if
# there is none, starts the daemons (walkeepers, pageserver, console, proxy)
# and the compute `main`, makes the endpoint `app` (branch `app`, role `zenith`
# with a generated password, database `app`) the first time, runs one query
# through the proxy, and prints both psql connection strings. Safe to run again: what
# is already running is left as it is. $ZENITH_INIT_CONFIG may name a TOML
# file for `zenith init --config` (ports, paths); ZENITH_AUTH=1 makes a new
# repository with JWT auth on every daemon (`zenith init --auth`).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# The release binaries `make run` built, or $ZENITH_RUN_BIN's.
ZENITH="${ZENITH_RUN_BIN:-$ROOT/target/release}/zenith"
PSQL="$ROOT/tmp_install/bin/psql"
export ZENITH_REPO_DIR="${ZENITH_REPO_DIR:-$ROOT/.zenith}"
export LD_LIBRARY_PATH="$ROOT/tmp_install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ ! -f "$ZENITH_REPO_DIR/config" ]; then
    auth=()
    [ "${ZENITH_AUTH:-0}" = 1 ] && auth=(--auth)
    "$ZENITH" init ${ZENITH_INIT_CONFIG:+--config "$ZENITH_INIT_CONFIG"} "${auth[@]}"
fi
# Outputs are read whole before grep looks at them: `grep -q` stops reading at
# the first match, and under pipefail the writer's broken pipe would count.
if grep -q '^pageserver: running' <<<"$("$ZENITH" status)"; then
    echo "pageserver already running"
else
    "$ZENITH" start
fi
if grep -Eq '^main +main .* running ' <<<"$("$ZENITH" pg list)"; then
    echo "compute main already running"
else
    "$ZENITH" pg start main
fi
CONNSTR="$("$ZENITH" pg list | awk '$1 == "main" { print $NF }')"

# The endpoint `app`, reached through the proxy (TLS, SCRAM).
PWFILE="$ZENITH_REPO_DIR/app.password"
if ! grep -q '^app:' <<<"$("$ZENITH" endpoint list)"; then
    grep -qw app <<<"$("$ZENITH" branch)" || "$ZENITH" branch app main
    "$ZENITH" endpoint create app --branch app
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$PWFILE")
    "$ZENITH" role create app zenith --password "$(cat "$PWFILE")"
    "$ZENITH" db create app app --owner zenith
fi
PROXY_CONNSTR="$("$ZENITH" endpoint list | sed -n 's/^  psql "\(host=app\..*\)"$/\1/p' | sed 's/user=ROLE dbname=postgres/user=zenith dbname=app/')"
echo
echo "Checking the compute with one query, directly and through the proxy:"
ZENITH_ALLOW_ROOT=1 "$PSQL" -X "$CONNSTR" -c "SELECT 'Zenith is running' AS status, version()"
PGPASSWORD="$(cat "$PWFILE")" "$PSQL" -X "$PROXY_CONNSTR" -c "SELECT 'through the proxy' AS status, current_user"
cat <<MSG
A local Zenith cluster is running (repository: $ZENITH_REPO_DIR).

Connect to the compute main directly with:
    $PSQL $CONNSTR

Connect through the proxy (TLS verified against the local CA, SCRAM) to the endpoint app, as
role zenith (its password is in $PWFILE):
    $PSQL "$PROXY_CONNSTR"

Then, for example:
    $ZENITH branch dev main                 # a branch of main, as of now
    $ZENITH pg start dev_node --branch dev  # a compute on it
    $ZENITH pg list                         # computes and their psql strings
    $ZENITH endpoint list                   # endpoints behind the proxy, how to connect
    $ZENITH status                          # daemons and branches
    $ZENITH stop                            # stop everything

Computes are stateless (every page comes from the pageserver); endpoints behind the proxy are
suspended when idle and woken by the next connection (see docs/zenith_cli.md, docs/proxy.md).
MSG
