#!/usr/bin/env bash
# Make sure a Docker engine answers. Installs Debian's docker.io and starts dockerd when we are
# root and none answers (these machines have no systemd); otherwise says what to do and fails.
set -euo pipefail

engine_answers() { docker info >/dev/null 2>&1; }

if engine_answers; then
  echo "scoperun: Docker engine is running."
  exit 0
fi

if [ "$(id -u)" != "0" ]; then
  echo "scoperun: no Docker engine answers and you are not root." >&2
  echo "  Start Docker (e.g. 'sudo systemctl start docker') or ask an administrator, then retry." >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "scoperun: no Docker engine installed; installing Debian's docker.io (about 20 s)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl start docker
else
  echo "scoperun: starting dockerd (log: /var/log/dockerd.log)..."
  # setsid: the engine must outlive the shell (and the make) that started it.
  setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
fi

for _ in $(seq 1 60); do
  if engine_answers; then
    echo "scoperun: Docker engine is running."
    exit 0
  fi
  sleep 1
done
echo "scoperun: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
exit 1
