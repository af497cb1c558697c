"""Operations on a swarm for scoperun: doctor's node probes and copying images to nodes without a
registry (`docker save | docker load`). Stopping a run's task and gc of run services go through the
engine contract (EngineHousekeeping.stop_service, services, remove_service)."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scoperun.engine.base import MANAGED_LABEL
from scoperun.engine.swarm import _TERMINAL, NODE_LABEL, STAGING_LABEL, _task

if TYPE_CHECKING:
    from scoperun.engine.docker import DockerBackend
from scoperun.errors import EngineError, ImageError

__all__ = ["check_swarm", "push_image", "swarm_checks"]


def swarm_checks(engine: DockerBackend, *, image: str, workspace: Path, projects_dir: str,
                 tools_dir: str) -> list[tuple[str, bool, str, str]]:
    """`check_swarm` on the engine a DockerBackend talks to (doctor's entry point)."""
    return check_swarm(engine.client, image=image, workspace=workspace, projects_dir=projects_dir, tools_dir=tools_dir)


def check_swarm(client: Any, *, image: str, workspace: Path, projects_dir: str, tools_dir: str,
                node_label: str = NODE_LABEL) -> list[tuple[str, bool, str, str]]:
    """Doctor's swarm checks as (name, ok, detail, fix): manager, labelled nodes, and per node a probe
    task that proves the image is there and the workspace is mounted at the same path."""
    info = client.info().get("Swarm", {})
    if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
        state = info.get("LocalNodeState", "?")
        return [("swarm", False, f"the engine at docker_host is not a swarm manager (state {state})",
                 "docker swarm init --advertise-addr ADDR   # on the manager")]
    checks = [("swarm", True, f"swarm manager, {info.get('Nodes', '?')} node(s)", "")]
    nodes = [n for n in client.api.nodes() if (n["Spec"].get("Labels") or {}).get(node_label) == "true"]
    ready = [n for n in nodes if n["Status"]["State"] == "ready" and n["Spec"].get("Availability") == "active"]
    if not ready:
        return [*checks, ("nodes", False, f"no ready node labelled {node_label}=true",
                          f"docker node update --label-add {node_label}=true NODE   # a node that mounts the workspace")]
    staging = [n for n in ready if (n["Spec"].get("Labels") or {}).get(STAGING_LABEL) == "true"]
    detail = (f"{len(ready)} ready node(s) labelled {node_label}=true "
              f"({len(staging)} also {STAGING_LABEL}=true for staged runs)")
    checks.append(("nodes", True, detail, ""))
    probe = f"test -d /workspace/{projects_dir} && test -d /workspace/{tools_dir} && echo ok"
    for node in ready:
        name = f"{node['Description']['Hostname']} ({node['ID'][:12]})"
        ok, detail = _probe_node(client, node["ID"], image, workspace, probe)
        checks.append((f"node {node['ID'][:12]}", ok, f"{name}: {detail}",
                       "" if ok else f"scoperun image push-nodes --to <that node's engine>; mount the workspace at "
                       f"{workspace} on it"))
    return checks


def _probe_node(client: Any, node_id: str, image: str, workspace: Path, probe: str) -> tuple[bool, str]:
    from docker.types import ContainerSpec, Mount, Placement, RestartPolicy, ServiceMode, TaskTemplate

    spec = ContainerSpec(image=image, command=["sh", "-c", probe], user="1000:1000", read_only=True, cap_drop=["ALL"],
                         mounts=[Mount("/workspace", str(workspace), type="bind", read_only=True)],
                         labels={MANAGED_LABEL: "1"})
    labels = {MANAGED_LABEL: "1", "org.scoperun.deadline": str(int(time.time() + 120))}
    template = TaskTemplate(spec, restart_policy=RestartPolicy(condition="none", max_attempts=0),
                            placement=Placement(constraints=[f"node.id=={node_id}"]))
    sid = client.api.create_service(template, name=f"scoperun-doctor-{secrets.token_hex(4)}",
                                    labels=labels, mode=ServiceMode("replicated", replicas=1))["ID"]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            task = _task(client.api, sid)
            status = (task or {}).get("Status", {})
            if status.get("State") in _TERMINAL:
                break
            time.sleep(0.2)
        else:
            return False, "the probe task did not finish within 60 s"
        if status.get("State") == "complete":
            return True, f"image {image} present, workspace {workspace} mounted"
        err = status.get("Err") or status.get("State")
        if "non-zero exit" in (err or ""):
            return False, f"workspace {workspace} (with its projects and Tools folders) is not on this node"
        return False, f"cannot run {image} here: {err}"
    finally:
        with contextlib.suppress(Exception):
            client.api.remove_service(sid)


def push_image(image: str, hosts: list[str], *, source_host: str | None = None) -> list[str]:
    """Copy `image` to each engine in `hosts` with `docker save | docker load` (no registry)."""
    done: list[str] = []
    for host in hosts:
        save_cmd = ["docker", *(["-H", source_host] if source_host else []), "save", image]
        env = dict(os.environ)
        with subprocess.Popen(save_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as save:
            load = subprocess.run(["docker", "-H", host, "load"], stdin=save.stdout, capture_output=True, check=False)
            save.wait()
            save_err = save.stderr.read().decode(errors="replace") if save.stderr else ""
        if save.returncode != 0:
            raise ImageError(f"`docker save {image}` failed: {save_err.strip()}. Build it first: `scoperun image build`.")
        if load.returncode != 0:
            raise EngineError(f"`docker -H {host} load` failed: {load.stderr.decode(errors='replace').strip()}")
        done.append(host)
    return done
