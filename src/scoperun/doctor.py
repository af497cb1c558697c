"""`scoperun doctor`: the original plan's prerequisite checks, each with the command that fixes it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scoperun.config import Settings
from scoperun.mounts import filesystem_of

if TYPE_CHECKING:
    from scoperun.engine.base import EngineHousekeeping
    from scoperun.engine.docker import DockerBackend

__all__ = ["Check", "run_checks"]

_MIN_FREE_BYTES = 2 * 1024**3


@dataclass
class Check:
    """One check: whether it passed, what was seen, and how to fix it if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    severity: str = "error"  # "error" fails doctor; "warning" only informs

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


def _check_engine(settings: Settings) -> tuple[Check, DockerBackend | None]:
    from scoperun.engine.docker import DockerBackend
    from scoperun.errors import EngineError

    engine = DockerBackend(settings.docker_host, remove_in_background=False, timeout=10)
    try:
        version = engine.engine_version()
        return Check("engine", True, f"Docker engine {version.version} (API {version.api_version})"), engine
    except EngineError as exc:
        engine.close()
        return Check("engine", False, str(exc), fix="make engine   # as root: installs and starts dockerd"), None


# Container escapes fixed in runc: CVE-2019-5736 (1.0.0-rc7, overwriting the host's runc binary) and
# CVE-2024-21626 (1.1.12, a leaked host file descriptor as the working folder).
RUNC_FIXED = (1, 1, 12)
# Distribution packages that carry the 1.1.12 fix in an older upstream version (dpkg version).
RUNC_BACKPORTS = {"1.1.5+ds1": "1.1.5+ds1-1+deb12u1"}  # Debian 12 (DSA-5605-1)


def _version_tuple(text: str) -> tuple[int, ...]:
    import re

    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in match.groups()) if match else ()


def _dpkg_has(package: str, at_least: str) -> bool | None:
    """Whether the installed Debian package is at least `at_least`; None when dpkg cannot say."""
    import subprocess

    try:
        installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                                   timeout=10, check=False).stdout.strip()
        if not installed:
            return None
        return subprocess.run(["dpkg", "--compare-versions", installed, "ge", at_least], timeout=10,
                              check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return None


def check_runc(version: str | None, *,
               backport_check: Callable[[str, str], bool | None] = _dpkg_has) -> Check:
    """Is the engine's runc free of the known container escapes (CVE-2019-5736, CVE-2024-21626)?"""
    fix = "upgrade runc to 1.1.12 or later (apt-get install --only-upgrade runc containerd, or your engine's update)"
    if not version:
        return Check("runc", False, "the engine does not report its runc version; check it by hand (`runc --version`"
                     " on the engine's host must be 1.1.12 or later)", fix=fix, severity="warning")
    found = _version_tuple(version)
    if found and found >= RUNC_FIXED:
        return Check("runc", True, f"runc {version}: has the fixes for CVE-2019-5736 and CVE-2024-21626")
    package = RUNC_BACKPORTS.get(version)
    if package and backport_check("runc", package):
        return Check("runc", True, f"runc {version}: the distribution package ({package} or later) carries the "
                     f"fix for CVE-2024-21626")
    return Check("runc", False, f"runc {version} predates the fix for CVE-2024-21626 (1.1.12): a container can "
                 f"escape to the host through a leaked file descriptor", fix=fix)


def _check_runc(engine: EngineHousekeeping | None) -> Check:
    if engine is None:
        return Check("runc", False, "not checked: no engine", fix="make engine")
    try:
        components = engine.engine_version().components
    except Exception as exc:
        return Check("runc", False, f"cannot read the engine's versions ({exc})", fix="scoperun doctor again")
    return check_runc(components.get("runc"))


def _check_image(name: str, tag: str, engine: EngineHousekeeping | None, *, fix: str,
                 severity: str = "error") -> Check:
    if engine is None:
        return Check(name, False, "not checked: no engine", fix="make engine", severity=severity)
    image = engine.image_info(tag)
    if image is None:
        return Check(name, False, f"image {tag} is missing", fix=fix, severity=severity)
    labels = image.labels
    return Check(name, True, f"{tag} ({image.short_id}, inputs {labels.get('org.scoperun.inputs-hash', '?')[:12]})")


def _check_workspace(settings: Settings) -> list[Check]:
    root = Path(settings.workspace).expanduser()
    if not root.is_dir():
        return [Check("workspace", False, f"{root} does not exist",
                      fix=f"scoperun demo   # sample workspace, or set SCOPERUN_WORKSPACE (now {root})")]
    root = root.resolve()
    checks = [Check("workspace", True, str(root))]
    projects = root / settings.projects_dir
    if projects.is_dir():
        cases = sum(1 for p in projects.iterdir() if p.is_dir() and not p.is_symlink())
        checks.append(Check("cases", True, f"{cases} case folder(s) in {projects}"))
    else:
        checks.append(Check("cases", False, f"no {settings.projects_dir}/ folder in {root}", fix=f"mkdir -p {projects}"))
    audit = root / settings.audit_dir
    probe = audit / f".doctor-{os.getpid()}"
    try:
        audit.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
        checks.append(Check("audit", True, f"audit folder {audit} is writable"))
    except OSError as exc:
        checks.append(Check("audit", False, f"cannot write {audit}: {exc.strerror}",
                            fix=f"mkdir -p {audit} && chown $(id -u) {audit}   # runs refuse to start without it"))
    uid = int(settings.container_user.split(":")[0])
    if projects.is_dir():
        unwritable = [p.name for p in projects.iterdir()
                      if p.is_dir() and not p.is_symlink() and p.stat().st_uid != uid and not (p.stat().st_mode & 0o002)]
        if unwritable:
            checks.append(Check(
                "case-owner", False,
                f"{len(unwritable)} case folder(s) are not writable by the container user {uid} "
                f"(e.g. {unwritable[0]!r}); runs there can read but not write",
                fix=f"chown -R {settings.container_user} {projects}   # gcsfuse: mount with --uid {uid} --gid "
                    f"{settings.container_user.split(':')[-1]} --file-mode 664 --dir-mode 775",
                severity="warning",
            ))
    mount = filesystem_of(root)
    if mount is not None:
        mount_point, fstype = mount
        is_fuse = fstype.startswith("fuse")
        kind = "gcsfuse" if "gcsfuse" in fstype else ("a FUSE mount" if is_fuse else f"local {fstype}")
        checks.append(Check("mount", True, f"workspace is on {kind} ({mount_point}, {fstype})", severity="warning"))
    if projects.is_dir():
        checks.append(_check_staging(settings, projects))
    usage = shutil.disk_usage(root)
    checks.append(Check(
        "disk", usage.free >= _MIN_FREE_BYTES, f"{usage.free / 1024**3:.1f} GiB free under {root}",
        fix="free disk space: `docker image prune` removes unused images (scoperun labels its own)",
        severity="warning",
    ))
    return checks


def _check_firewall(settings: Settings) -> Check:
    from scoperun.errors import FirewallError
    from scoperun.safety.firewall import status

    severity = "error" if settings.firewall_required else "warning"
    fix = "scoperun firewall install   # as root, after Docker started (and at every boot)"
    try:
        state = status(settings.blocked_cidrs)
    except FirewallError as exc:
        return Check("firewall", False, f"cannot check the metadata-server block: {exc}", fix=fix, severity=severity)
    if state.ok:
        return Check("firewall", True, f"containers cannot reach {', '.join(state.blocked) or 'nothing listed'}")
    return Check("firewall", False,
                 f"containers can reach {', '.join(state.missing)} (on a cloud VM: the metadata server and the "
                 f"VM's credentials)", fix=fix, severity=severity)


def _check_staging(settings: Settings, projects: Path) -> Check:
    """Staged runs overlay the case folder: check its filesystem lets overlayfs read it."""
    from scoperun.changes.tracker import overlay_lower_problem

    cases = [p for p in sorted(projects.iterdir())[:5] if p.is_dir() and not p.is_symlink()]
    problem = next(filter(None, (overlay_lower_problem(case) for case in cases or [projects])), None)
    if problem is None:
        return Check("staging", True, f"case folders can be overlaid (write_mode {settings.write_mode})",
                     severity="warning")
    return Check(
        "staging", False, f"staged runs cannot overlay the case folders: {problem}; they will be rejected",
        fix="export SCOPERUN_WRITE_MODE=direct   # changes recorded, no undo",
        severity="error" if settings.write_mode == "staged" else "warning",
    )


def _check_pool(settings: Settings, engine: EngineHousekeeping | None) -> Check:
    """What warm one-run containers need: the launcher in the image, a root controller, the new mount API."""
    if not settings.pool or settings.pool_size <= 0:
        return Check("pool", True, "warm pool off: every run starts a fresh container", severity="warning")
    fix_image = "make image   # or: scoperun image build (the runner image ships the launcher)"
    if engine is not None:
        from scoperun.errors import EngineError

        try:
            image = engine.image_info(settings.image)
        except EngineError:
            image = None
        labels = image.labels if image is not None else {}
        if not labels.get("org.scoperun.launcher"):
            return Check("pool", False, f"image {settings.image} has no launcher: no warm containers, and secrets "
                         f"travel in the container's configuration", fix=fix_image, severity="warning")
    from scoperun.engine import slots

    problem = slots.usable() if settings.pool_slots else "pool_slots is false"
    if problem is not None:
        # Not a failure: the next container of a case is kept pre-started with its mounts (engine.prestart).
        why = problem.split(";")[0]
        return Check("pool", True, f"warm pool without slots ({why}): after a direct or read-only run the next "
                     f"container of its case is kept pre-started with its mounts (up to {settings.pool_size}, idle "
                     f"{settings.pool_idle:g} s); first runs and staged runs start fresh",
                     fix="run scoperun as root with pool_slots = true to pool every run", severity="warning")
    from scoperun.audit.state import state_dir

    probe = state_dir(settings) / "pool" / f"doctor-{os.getpid()}"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        (probe / "src").mkdir(exist_ok=True)
        (probe / "dst").mkdir(exist_ok=True)
        slots.bind(probe / "src", probe / "dst", read_only=True)  # the read-only-from-the-start mount a slot needs
        slots.unmount(probe / "dst")
    except OSError as exc:
        return Check("pool", False, f"cannot make a read-only slot mount under {probe.parent} ({exc}); runs start "
                     f"fresh", fix="a kernel >= 5.12 (mount_setattr) and a local state_dir", severity="warning")
    finally:
        for sub in ("dst", "src", ""):
            try:
                (probe / sub).rmdir() if sub else probe.rmdir()
            except OSError:
                pass
    return Check("pool", True, f"warm pool: {settings.pool_size} per kind of run, idle {settings.pool_idle:g} s, "
                 f"slots under {probe.parent}")


def run_checks(settings: Settings) -> list[Check]:
    """Run every check; never raises for a failed check."""
    found, engine = _check_engine(settings)
    try:
        checks = [
            found,
            _check_runc(engine),
            _check_image("image", settings.image, engine, fix="make image   # or: scoperun image build"),
            # Only browser runs need it: a warning, not a failure.
            _check_image("browser", settings.browser_image, engine, severity="warning",
                         fix="make image   # or: scoperun image build --browser"),
        ]
        checks.extend(_check_workspace(settings))
        checks.append(_check_firewall(settings))
        checks.append(_check_pool(settings, engine))

        checks.extend(_check_state(settings))  # audit index and chain (host-local state)
        if settings.backend == "swarm":
            checks.extend(_check_swarm(settings, engine))
        return checks
    finally:
        if engine is not None:
            engine.close()


def _check_swarm(settings: Settings, engine: DockerBackend | None) -> list[Check]:
    """The swarm backend: docker_host is a manager, labelled nodes, image and workspace on each node."""
    if engine is None:
        return [Check("swarm", False, "not checked: no engine at docker_host", fix="set docker_host to a swarm manager")]
    from scoperun.engine.swarmops import swarm_checks
    from scoperun.errors import EngineError

    try:
        found = swarm_checks(engine, image=settings.image, workspace=Path(settings.workspace).expanduser().resolve(),
                                    projects_dir=settings.projects_dir, tools_dir=settings.tools_dir)
    except EngineError as exc:
        return [Check("swarm", False, str(exc))]
    except Exception as exc:
        return [Check("swarm", False, f"the swarm manager failed: {exc}")]
    return [Check(name, ok, detail, fix=fix) for name, ok, detail, fix in found]


def _check_state(settings: Settings) -> list[Check]:
    """`scoperun doctor` checks of the host-local state: folder writable, index and chain head usable."""
    from scoperun.audit.state import index_path, state_dir
    from scoperun.errors import ScopeRunError

    folder = state_dir(settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".doctor-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return [Check("state", False, f"host state folder {folder} is not writable ({exc.strerror})",
                      fix=f"mkdir -p {folder} && chown $(id -u) {folder}   # or set SCOPERUN_STATE_DIR")]
    checks = [Check("state", True, f"host state (audit index, chain heads) in {folder}")]
    root = Path(settings.workspace).expanduser()
    if not root.is_dir():
        return checks
    from scoperun.audit.chain import HostChain
    from scoperun.audit.index import AuditIndex

    audit_dir = root.resolve() / settings.audit_dir
    try:
        index = AuditIndex(index_path(settings, audit_dir), audit_dir)
        checks.append(Check("index", True, f"audit index {index.path}: {index.count()} records "
                                          f"(`scoperun audit reindex` catches up with the files)"))
        head = HostChain(folder, audit_dir).head()
        detail = f"audit chain {head['id']} at position {head['seq']}" if head else "audit chain not started yet"
        checks.append(Check("chain", True, detail + " (`scoperun audit verify` checks it)"))
    except ScopeRunError as exc:
        checks.append(Check("index", False, str(exc), fix="scoperun audit reindex --full"))
    return checks
