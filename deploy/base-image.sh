#!/usr/bin/env bash
# Build a local Debian bookworm base image with python3 (3.11) without pulling from any
# registry: debootstrap --variant=minbase into a folder, trim it, `docker import` it.
# Idempotent and cached: does nothing when the image already exists (FORCE_BASE=1 rebuilds).
#
#   deploy/base-image.sh                 # -> peerplane-base:bookworm
#   BASE_IMAGE=my/base:tag deploy/base-image.sh
#   MIRROR=http://deb.debian.org/debian  # the apt mirror debootstrap uses
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-peerplane-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if [ "${FORCE_BASE:-0}" != 1 ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base-image: $BASE_IMAGE exists (cached)"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "base-image: debootstrap needs root; run with sudo (only this step needs it)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "base-image: installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap \
    >/dev/null
fi

start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/peerplane-rootfs.XXXXXX")
cleanup() {
  # debootstrap may leave /proc or /sys mounted inside the rootfs if it fails half way.
  for m in proc sys dev/pts dev; do
    if mountpoint -q "$work/rootfs/$m" 2>/dev/null; then umount -l "$work/rootfs/$m"; fi
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "base-image: debootstrap $SUITE (minbase + python3) from $MIRROR"
debootstrap --variant=minbase --include=python3 --components=main "$SUITE" \
  "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  [ -f "$work/rootfs/debootstrap/debootstrap.log" ] &&
    tail -n 30 "$work/rootfs/debootstrap/debootstrap.log" >&2
  exit 1
}

# Trim what a runtime image never reads: package caches and lists, docs (but not the
# copyright files), man pages, locales. The stdlib's compiled .pyc files stay: without them
# every python3 start (the agent, each healthcheck) recompiles what it imports.
r="$work/rootfs"
rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/* \
  "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/lintian \
  "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/tmp/* "$r"/debootstrap
find "$r"/usr/share/doc -type f ! -name copyright -delete
find "$r"/usr/share/doc -mindepth 1 -type d -empty -delete
find "$r"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
# apt inside the image should fetch from the same mirror (if anyone ever needs it).
echo "deb $MIRROR $SUITE main" >"$r/etc/apt/sources.list"
: >"$r/etc/machine-id"

# Import with the metadata a base image needs (docker import sets no CMD/ENV of its own).
tar --numeric-owner --xattrs -C "$r" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap --variant=minbase --include=python3 $SUITE" \
  - "$BASE_IMAGE" >/dev/null

size=$(docker image inspect -f '{{.Size}}' "$BASE_IMAGE")
echo "base-image: built $BASE_IMAGE ($((size / 1000000)) MB) in $(($(date +%s) - start)) s"
