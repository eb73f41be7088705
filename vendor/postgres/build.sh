#!/usr/bin/env bash
# Build PostgreSQL 15 from Debian's source package, with our patch series and
# contrib modules, and install it into tmp_install/.
#
# The upstream source is fetched by package name with `apt-get source
# --download-only` through a private apt configuration that adds deb-src
# entries mirroring the machine's own Debian entries; no system file is edited
# and no mirror address is written in this repository. PG_SOURCE_TARBALL=/path
# to a postgresql-15.*.tar.bz2 skips the download.
#
# Rebuilds only when the pinned version, the patches, the contrib sources or
# the configure options change (stamp file with their hash).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PG_DEB_VERSION="15.18-0+deb12u1"
PG_UPSTREAM_VERSION="15.18"
PG_ORIG_SHA256="11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4"

BUILD_DIR="${PG_BUILD_DIR:-$ROOT/build/postgres}"
INSTALL_DIR="${POSTGRES_INSTALL_DIR:-$ROOT/tmp_install}"
JOBS="${PG_JOBS:-2}"
CASSERT="${PG_CASSERT:-no}"
PATCH_DIR="$ROOT/vendor/postgres/patches"
CONTRIB_DIR="$ROOT/vendor/postgres/contrib"

CONFIGURE_OPTS=(--prefix="$INSTALL_DIR" --enable-debug --with-lz4 --with-zstd --with-openssl --without-icu)
if [ "$CASSERT" = "yes" ]; then
    CONFIGURE_OPTS+=(--enable-cassert)
fi

log() { echo "postgres: $*" >&2; }

# ---------------------------------------------------------------- stamp
compute_stamp() {
    {
        echo "version $PG_DEB_VERSION $PG_ORIG_SHA256"
        echo "configure ${CONFIGURE_OPTS[*]}"
        echo "script $(sha256sum "$0" | cut -d' ' -f1)"
        (cd "$ROOT/vendor/postgres" && for d in patches contrib; do [ -d "$d" ] && find "$d" -type f -print0; done | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    } | sha256sum | cut -d' ' -f1
}
STAMP="$(compute_stamp)"
STAMP_FILE="$INSTALL_DIR/.zenith-build-stamp"
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP" ] && [ -x "$INSTALL_DIR/bin/postgres" ]; then
    log "up to date in $INSTALL_DIR"
    exit 0
fi

# ---------------------------------------------------------------- build deps
need_pkgs=()
command -v bison >/dev/null || need_pkgs+=(bison)
command -v flex >/dev/null || need_pkgs+=(flex)
command -v gcc >/dev/null || need_pkgs+=(gcc)
command -v make >/dev/null || need_pkgs+=(make)
command -v patch >/dev/null || need_pkgs+=(patch)
command -v bzip2 >/dev/null || need_pkgs+=(bzip2)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
if command -v dpkg >/dev/null; then
    for p in libreadline-dev zlib1g-dev liblz4-dev libzstd-dev libssl-dev libseccomp-dev; do
        dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
    done
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing build dependencies: ${need_pkgs[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    else
        log "missing build dependencies: ${need_pkgs[*]}"
        log "install them (e.g. sudo apt-get install ${need_pkgs[*]}) and run make again"
        exit 1
    fi
fi

# ---------------------------------------------------------------- source
DL_DIR="$ROOT/build/download"
mkdir -p "$DL_DIR"
TARBALL="${PG_SOURCE_TARBALL:-}"
if [ -z "$TARBALL" ]; then
    TARBALL="$DL_DIR/postgresql-15_${PG_UPSTREAM_VERSION}.orig.tar.bz2"
    if [ ! -f "$TARBALL" ] || ! echo "$PG_ORIG_SHA256  $TARBALL" | sha256sum -c --quiet - 2>/dev/null; then
        rm -f "$TARBALL"
        APT_DIR="$ROOT/build/apt"
        rm -rf "$APT_DIR"
        mkdir -p "$APT_DIR/parts" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
        # Mirror the machine's own Debian entries as deb-src entries.
        n=0
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            grep -q '^Types:.*\bdeb\b' "$f" || continue
            sed -e 's/^Types:.*/Types: deb-src/' "$f" > "$APT_DIR/parts/src$n.sources"
            n=$((n + 1))
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            grep -E '^deb\s' "$f" | sed -e 's/^deb\s/deb-src /' > "$APT_DIR/parts/src$n.list" || true
            n=$((n + 1))
        done
        APT_OPTS=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APT_DIR/parts"
                  -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache"
                  -o APT::Sandbox::User=root -o Debug::NoLocking=1)
        log "fetching source package postgresql-15=$PG_DEB_VERSION"
        apt-get "${APT_OPTS[@]}" update -qq >/dev/null 2>&1 || apt-get "${APT_OPTS[@]}" update
        (cd "$DL_DIR" && apt-get "${APT_OPTS[@]}" source --download-only -qq "postgresql-15=$PG_DEB_VERSION" >/dev/null) || {
            log "could not download postgresql-15=$PG_DEB_VERSION with apt-get source;"
            log "set PG_SOURCE_TARBALL=/path/to/postgresql-${PG_UPSTREAM_VERSION}.tar.bz2 to build from a local tarball"
            exit 1
        }
    fi
    if ! echo "$PG_ORIG_SHA256  $TARBALL" | sha256sum -c --quiet -; then
        log "sha256 mismatch for $TARBALL (expected $PG_ORIG_SHA256)"
        exit 1
    fi
fi

# ---------------------------------------------------------------- unpack + patch
SRC="$BUILD_DIR/src"
rm -rf "$BUILD_DIR"
mkdir -p "$SRC"
log "unpacking $(basename "$TARBALL")"
tar xjf "$TARBALL" -C "$SRC" --strip-components=1
for p in "$PATCH_DIR"/*.patch; do
    [ -f "$p" ] || continue
    log "applying $(basename "$p")"
    patch -d "$SRC" -p1 --quiet --forward < "$p"
done
for d in "$CONTRIB_DIR"/*/; do
    [ -d "$d" ] || continue
    cp -r "$d" "$SRC/contrib/"
done

# ---------------------------------------------------------------- build
log "configuring (${CONFIGURE_OPTS[*]})"
(cd "$SRC" && ./configure "${CONFIGURE_OPTS[@]}" > "$BUILD_DIR/configure.log" 2>&1) || {
    tail -30 "$BUILD_DIR/configure.log"; exit 1; }
log "building with -j$JOBS"
# PostgreSQL's top-level `all` generates the shared headers (errcodes.h, ...)
# before recursing only when MAKELEVEL is 0: when this script runs under our
# own Makefile, MAKELEVEL/MAKEFLAGS are inherited and would skip that step.
unset MAKELEVEL MAKEFLAGS MFLAGS
{ make -C "$SRC" -j"$JOBS" -s all && make -C "$SRC/contrib" -j"$JOBS" -s all; } > "$BUILD_DIR/build.log" 2>&1 || {
    tail -50 "$BUILD_DIR/build.log"; exit 1; }
rm -rf "$INSTALL_DIR"
{ make -C "$SRC" -s install && make -C "$SRC/contrib" -s install; } > "$BUILD_DIR/install.log" 2>&1 || {
    tail -50 "$BUILD_DIR/install.log"; exit 1; }
for d in "$CONTRIB_DIR"/*/; do
    [ -d "$d" ] || continue
    make -C "$SRC/contrib/$(basename "$d")" -s install >> "$BUILD_DIR/install.log" 2>&1
done
echo "$STAMP" > "$STAMP_FILE"
log "installed into $INSTALL_DIR"
