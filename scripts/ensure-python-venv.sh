#!/usr/bin/env bash
# Create (idempotently) a Python venv and install the test requirements into it.
# Installs python3-venv with apt when it is missing and we are root.
set -euo pipefail
VENV="$1"
REQS="$2"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3 venv support is missing: install python3-venv and run make again" >&2
        exit 1
    fi
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
