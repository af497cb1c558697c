#!/usr/bin/env bash
# Build scoperun's images: the runner, then the browser image FROM it. The runner's base image:
# $SCOPERUN_BASE_IMAGE if set; else the upstream python:3.11-slim-bookworm if it is present or
# can be pulled; else the registry-free base made by scripts/make-base-image.sh. An unchanged
# build is skipped (content-hash label).
set -euo pipefail
cd "$(dirname "$0")/.."

upstream="python:3.11-slim-bookworm"
base="${SCOPERUN_BASE_IMAGE:-}"
if [ -z "$base" ]; then
  if docker image inspect "$upstream" >/dev/null 2>&1 || timeout 120 docker pull -q "$upstream" >/dev/null 2>&1; then
    base="$upstream"
  else
    echo "scoperun: no registry answers; using the registry-free base image."
    bash scripts/make-base-image.sh scoperun-base:bookworm
    base="scoperun-base:bookworm"
  fi
fi

ca_args=()
ca="${SCOPERUN_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
if [ -f "$ca" ]; then
  ca_args=(--ca-bundle "$ca")
fi
.venv/bin/scoperun image build --base "$base" "${ca_args[@]}" "$@"
# The browser image (Chromium + Playwright) on top of the runner; its inputs hash includes the
# runner's image id, so it is rebuilt exactly when the runner or its own Dockerfile changed.
# SCOPERUN_SKIP_BROWSER_IMAGE=1 skips it (e.g. a quick `make demo` on a slow link).
if [ "${SCOPERUN_SKIP_BROWSER_IMAGE:-0}" != "1" ]; then
  .venv/bin/scoperun image build --browser "${ca_args[@]}"
fi
