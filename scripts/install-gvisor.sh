#!/usr/bin/env bash
# Install gVisor (Debian's runsc) and register it with the running Docker engine as runtime
# "runsc". Idempotent: does nothing when the engine already lists the runtime.
#
# /etc/docker/daemon.json is MERGED (other settings kept); dockerd reloads it on SIGHUP, so no
# running container is touched. Debian's 2022 runsc only works without a network, hence
# "--network=none": use it with scoperun's `network = "none"`.
set -euo pipefail

DAEMON_JSON=${DAEMON_JSON:-/etc/docker/daemon.json}
PIDFILE=${DOCKER_PIDFILE:-/var/run/docker.pid}

has_runtime() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; }

if has_runtime; then
  echo "scoperun: the Docker engine already has the runsc (gVisor) runtime."
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "scoperun: gVisor is not registered and you are not root; run this script as root:" >&2
  echo "  sudo bash scripts/install-gvisor.sh" >&2
  exit 1
fi
if ! command -v runsc >/dev/null 2>&1; then
  echo "scoperun: installing Debian's runsc (gVisor)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq runsc >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq runsc >/dev/null; }
fi
RUNSC=$(command -v runsc)

mkdir -p "$(dirname "$DAEMON_JSON")"
python3 - "$DAEMON_JSON" "$RUNSC" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path) as fh:
        text = fh.read()
    config = json.loads(text) if text.strip() else {}
except FileNotFoundError:
    config = {}
wanted = {"path": runsc, "runtimeArgs": ["--network=none"]}
runtimes = config.setdefault("runtimes", {})
if runtimes.get("runsc") != wanted:
    runtimes["runsc"] = wanted
    tmp = f"{path}.scoperun.tmp"
    with open(tmp, "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    print(f"scoperun: registered runsc in {path}")
PY

if [ -s "$PIDFILE" ]; then
  kill -HUP "$(cat "$PIDFILE")"
elif command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl reload docker
else
  echo "scoperun: cannot find dockerd's pid ($PIDFILE); restart Docker to load $DAEMON_JSON" >&2
  exit 1
fi
for _ in $(seq 1 30); do
  if has_runtime; then
    echo "scoperun: gVisor runtime runsc is ready (use runtime = \"runsc\" with network = \"none\")."
    exit 0
  fi
  sleep 1
done
echo "scoperun: dockerd did not pick up runsc; see /var/log/dockerd.log" >&2
exit 1
