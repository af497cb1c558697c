#!/usr/bin/env bash
# Registry-free base image: a Debian bookworm root made by debootstrap from the machine's
# configured Debian mirror, imported into Docker. Use it where no registry answers
# (`docker pull python:3.11-slim-bookworm` fails); the runner Dockerfile builds FROM it.
#
# usage: scripts/make-base-image.sh [IMAGE_NAME]   (default scoperun-base:bookworm)
# Skips the work when the image already exists with the same recipe hash.
set -euo pipefail

image="${1:-scoperun-base:bookworm}"
mirror="${SCOPERUN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages="python3,python3-venv,python3-pip,python-is-python3,ca-certificates,libmagic1,curl,wget,git,bash,procps"
recipe_hash=$(printf '%s|%s|%s' "bookworm" "$packages" "v1" | sha256sum | cut -c1-16)

existing=$(docker image inspect -f '{{ index .Config.Labels "org.scoperun.recipe" }}' "$image" 2>/dev/null || true)
if [ "$existing" = "$recipe_hash" ]; then
  echo "scoperun: base image $image is up to date (recipe $recipe_hash); skipping."
  exit 0
fi

if [ "$(id -u)" != "0" ]; then
  echo "scoperun: making the base image needs root (debootstrap). Run as root or pull python:3.11-slim-bookworm." >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "scoperun: installing debootstrap..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

rootfs=$(mktemp -d /var/tmp/scoperun-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "scoperun: debootstrap bookworm into $rootfs (about a minute)..."
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >/tmp/scoperun-debootstrap.log 2>&1 \
  || { echo "scoperun: debootstrap failed; see /tmp/scoperun-debootstrap.log" >&2; exit 1; }
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

echo "scoperun: importing as $image..."
tar -C "$rootfs" -c . | docker import \
  --change "LABEL org.scoperun.recipe=$recipe_hash" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$image" >/dev/null
echo "scoperun: base image $image ready."
