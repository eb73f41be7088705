#!/usr/bin/env bash
# `make run`: start a local Zenith cluster and print how to connect.
#
# The cluster (pageserver, walkeepers, computes) does not exist yet: the
# pageserver and the zenith CLI's cluster commands are still being built
# (issues 3 and 4). Until then this says honestly what the build gives you.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PGBIN="$ROOT/tmp_install/bin"
cat <<MSG

Zenith is built, but there is no cluster to start yet.

What works today:
  * PostgreSQL 15.18 with Zenith's patch series, installed in tmp_install/
      $PGBIN/postgres --version  ->  $("$PGBIN/postgres" --version 2>/dev/null || echo "not built")
  * the pageserver daemon (docs/pageserver.md): it imports a PostgreSQL data directory, follows a
    stock primary through a replication slot and serves GetPage@LSN and basebackups
      $ROOT/target/release/pageserver -D /tmp/ps --init -c pg_distrib_dir="'$ROOT/tmp_install'"
      $ROOT/target/release/pageserver -D /tmp/ps
  * waldecode: decodes PostgreSQL 15 WAL exactly as pg_waldump does
      $ROOT/target/release/waldecode --json /path/to/pgdata/pg_wal | head

Not yet: zenith init/start (the CLI and control plane), walkeepers, stateless computes, the proxy.
When they land, \`make run\` will start a local cluster and print a psql connection string.
MSG
