"""Settings: arguments, then `SCOPERUN_*` environment variables, then an optional `scoperun.toml`, then defaults.

The TOML file is looked up at `$SCOPERUN_CONFIG` or `./scoperun.toml`; keys are the field
names below (e.g. `workspace = "/mnt/workspace"`, `memory = "2g"`). A variable is the field's
name in any case (`SCOPERUN_MEMORY=2g`); list fields take JSON (`SCOPERUN_SECRET_ENV='["A", "B"]'`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from scoperun.policies import ApplyPolicy, SafetyPolicy, WriteMode

__all__ = ["Settings", "format_size", "is_loopback", "load_settings", "parse_memory", "parse_size", "shares_a_network"]

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def shares_a_network(network: str) -> bool:
    """Whether `network` would join the host's or another container's network (never allowed for a run)."""
    return network == "host" or network.startswith("container:")


def format_size(n: int | float | None) -> str:
    """Bytes for people (`1.5 MB`, rich's decimal units); `?` when unknown."""
    if n is None:
        return "?"
    from rich.filesize import decimal  # lazily: `import scoperun` stays light

    return decimal(int(n), precision=1)


def parse_size(value: str | int) -> int:
    """Parse a size (`512m`, `1g`, `1.5GiB`, `100k`, bytes as int) into bytes."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("a size must be positive")
        return value
    match = _MEMORY_RE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 512m, 1g, 2GiB)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def parse_memory(value: str | int) -> int:
    """Parse a Docker-style size (`512m`, `1g`, `1.5GiB`, bytes as int) into bytes."""
    size = parse_size(value)
    if isinstance(value, str) and size < 6 * 1024**2:
        raise ValueError(f"{value!r} is too small: Docker needs at least 6m for a container")
    return size


def _default_staging_dir() -> Path:
    # Local disk, outside the workspace: staged files must not land on the bucket.
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "scoperun" / "staging"


def _config_file() -> Path | None:
    explicit = os.environ.get("SCOPERUN_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("scoperun.toml")
    return local if local.is_file() else None


def _takes_json(annotation: Any) -> bool:
    """Whether a field is a list (given as JSON in its variable), alone or in a union."""
    if typing.get_origin(annotation) in (list, dict, set, tuple):
        return True
    return any(_takes_json(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def _outside_values(fields: dict[str, Any]) -> dict[str, Any]:
    """The values of `scoperun.toml` with the `SCOPERUN_*` variables over them, for the fields named."""
    from scoperun.errors import ConfigError

    found: dict[str, Any] = {}
    path = _config_file()
    if path is not None and path.is_file():
        import tomllib

        try:
            with path.open("rb") as fh:
                found.update(tomllib.load(fh))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}. Fix scoperun.toml or SCOPERUN_CONFIG.") from None
    env = {k.lower(): v for k, v in os.environ.items() if k[:9].upper() == "SCOPERUN_"}
    for name, field in fields.items():
        value = env.get(f"scoperun_{name}")
        if value is None:
            continue
        if _takes_json(field.annotation):
            import json

            try:
                found[name] = json.loads(value)
            except ValueError:
                raise ConfigError(f"SCOPERUN_{name.upper()} must be JSON, e.g. '[\"a\", \"b\"]'; got {value!r}") from None
        else:
            found[name] = value
    return found


class Settings(BaseModel):
    """Everything an operator can set; each field documents its meaning.

    `Settings(**values)` reads the environment and scoperun.toml for what `values` leaves out
    (the settings load in a few milliseconds: no settings library, `scoperun --help` stays fast).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_outside_values(type(self).model_fields), **values})

    workspace: Path = Field(Path("./workspace"), description="Workspace root (the gcsfuse mount in production).")
    projects_dir: str = Field("projects", description="Folder of case folders, relative to the workspace.")
    tools_dir: str = Field("Tools", description="The firm's scripts, mounted read-only.")
    audit_dir: str = Field("Database/script_executions", description="One JSON audit record per run.")
    temp_scripts_dir: str = Field("Database/temp_scripts", description="Scripts the agent wrote.")
    allowed_script_dirs: list[str] = Field(
        default_factory=lambda: ["Tools", "Database/temp_scripts"],
        description="Folders (relative to the workspace) a script may be run from.",
    )
    image: str = Field("scoperun-runner:latest", description="Image every run uses.")
    timeout: float = Field(300.0, gt=0, le=24 * 3600, description="Default timeout of a run, seconds.")
    memory: str = Field("1g", description="Memory limit; swap is set equal so a run cannot swap.")
    cpus: float = Field(0.5, gt=0, le=64, description="CPU quota in cores.")
    pids_limit: int = Field(256, ge=16, description="Maximum processes/threads in a run's container.")
    nofile: int = Field(1024, ge=64, description="Open-files ulimit in the container.")
    tmp_size: str = Field("64m", description="Size of the container's writable /tmp (root fs is read-only).")
    max_file_size: str = Field("2g", description="fsize ulimit: the largest file a run may write (EFBIG beyond).")
    hazard_scan_limit: int = Field(
        200_000, ge=1000, description="Entries of the case tree checked for hazards after a run (bounds the cost)."
    )
    blocked_cidrs: list[str] = Field(
        default_factory=lambda: ["169.254.169.254/32"],
        description="Destinations containers may never reach (`scoperun firewall install`); default: metadata server.",
    )
    firewall_required: bool = Field(
        False, description="Make `scoperun doctor` fail when the firewall rules are missing (set it on cloud VMs)."
    )
    network: str = Field("bridge", description="Default network: bridge (internet), none, or a Docker network name.")
    container_user: str = Field("1000:1000", description="uid:gid the script runs as (never root).")
    secret_env: list[str] = Field(
        default_factory=lambda: ["TAVILY_API_KEY", "OPENAI_API_KEY"],
        description="Host environment variables passed through to runs; their values are redacted.",
    )
    mcp_token: SecretStr | None = Field(
        None, description="Bearer token `scoperun mcp --http` requires of every request (SCOPERUN_MCP_TOKEN)."
    )
    tokens_file: Path | None = Field(
        None, description="Bearer tokens `scoperun serve` accepts, stored hashed (`scoperun token create`); "
        "None = <state_dir>/tokens.json.")
    max_queue: int = Field(100, ge=0, le=100_000, description="Runs `scoperun serve` holds waiting for a container "
                           "slot; past it a new run gets 429 with Retry-After.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names `scoperun serve` answers to besides loopback names and the "
        "address it listens on (Host header check against DNS rebinding).")
    url: str | None = Field(None, description="A `scoperun serve` to send runs to (SCOPERUN_URL); the CLI then "
                            "streams output live and Ctrl-C cancels the run. None = run in this process.")
    token: SecretStr | None = Field(None, description="Bearer token the CLI and `scoperun.Client` send to "
                                    "`url` (SCOPERUN_TOKEN).")
    output_cap: int = Field(64 * 1024, ge=1024, description="Bytes of stdout and of stderr kept in a result, each.")
    max_concurrent: int = Field(4, ge=1, le=256, description="Containers running a script at once; the rest wait (idle warm "
                                "containers and used ones waiting to be ended are extra).")
    pool: bool = Field(True, description="Keep warm one-run containers ready (root controller: the case is mounted "
                       "into a pre-started container's slot); each serves exactly one run. Off: every run starts fresh.")
    pool_size: int = Field(2, ge=0, le=64, description="Warm containers kept ready per kind of run (image, user, "
                           "network, ...); 0 = no pool.")
    pool_slots: bool = Field(True, description="With a root controller, mount each run's case into a warm "
                             "container's empty slot. False (and always without root): keep the next container of "
                             "a case pre-started with its mounts (direct and read-only runs); others start fresh.")
    pool_idle: float = Field(600.0, ge=30, le=24 * 3600, description="Seconds a warm container waits for a run "
                             "before it removes itself (a new one is made on demand).")
    safety_policy: SafetyPolicy = Field(
        SafetyPolicy.warn, description="Script scanner: off, warn (findings reported), block (findings refuse the run)."
    )
    seccomp: str = Field(
        "scoperun", description="Seccomp profile of runs: scoperun (shipped: the engine default's refusals plus "
        "io_uring, ptrace, namespaces, ...), engine (the engine's default), or the path of a JSON profile.")
    runtime: str | None = Field(None, description="OCI runtime (e.g. runsc for gVisor); None = engine default.")
    docker_host: str | None = Field(None, description="Engine address; None = DOCKER_HOST or the local socket.")
    backend: Literal["docker", "swarm"] = Field(
        "docker", description="docker: one engine runs every container; swarm: each run is a one-shot task on a "
        "swarm node labelled scoperun.workspace=true (docker_host is then a manager; see deploy/SWARM.md).")
    state_dir: Path | None = Field(
        None, description="Host-local state (audit index, chain heads); None = /var/lib/scoperun as root, "
        "else $XDG_STATE_HOME/scoperun (~/.local/state/scoperun). Never on the workspace mount.")
    index_path: Path | None = Field(None, description="SQLite audit index; None = one file per workspace under state_dir.")
    audit_chain: bool = Field(True, description="Chain finished records by hash (tamper evidence, `scoperun audit verify`).")
    full_output_limit: int = Field(
        16 * 1024**2, ge=0, description="Bytes of each stream's output kept beside its record (<id>.stdout / "
        ".stderr), in full even when the result was truncated; 0 = keep none.")
    gc_grace: float = Field(120.0, ge=0, description="Seconds past a run's timeout before gc calls it abandoned.")
    write_mode: WriteMode = Field(
        "staged", description="How runs see their case: staged (overlay; writes applied by policy), direct "
        "(read-write, recorded, no undo) or read-only.")
    apply_policy: ApplyPolicy = Field(
        "on-success", description="When a staged run's changes reach the case: on-success, never (review), always.")
    staging_dir: Path = Field(default_factory=_default_staging_dir,
                              description="Local-disk folder (outside the workspace) for staged runs' writes.")
    journal_dir: str = Field("Database/journal", description="Pre-images of applied changes, for rollback.")
    changes_record_cap: int = Field(200, ge=0, description="Changed paths listed in a result and audit record.")
    changes_max_files: int = Field(
        20_000, ge=1, description="Most paths a staged run's change set may hold and still be applied by policy; "
        "beyond, it is kept for review.")
    changes_max_bytes: str = Field(
        "2g", description="Most bytes (file sizes) a staged run's change set may add and still be applied by policy; "
        "beyond, it is kept for review.")
    post_run_budget: float = Field(
        120.0, gt=0, description="Seconds of host work after a run (change set, apply, hazard scan); past it the "
        "change set is kept for review and the run says so.")
    staging_retention_days: float = Field(7.0, ge=0, description="Age after which gc removes finished staging.")
    # Retention, applied by `scoperun gc` (None = keep). Hashes of what goes stay in retention.jsonl.
    temp_scripts_max_age_days: float | None = Field(
        30.0, ge=0, description="gc removes agent scripts (temp_scripts_dir) older than this many days.")
    temp_scripts_max_count: int | None = Field(None, ge=0, description="gc keeps at most this many agent scripts.")
    temp_scripts_max_bytes: str | None = Field(None, description="gc keeps at most this size of agent scripts, e.g. 500m.")
    full_outputs_max_age_days: float | None = Field(
        30.0, ge=0, description="gc removes full outputs (<id>.stdout/.stderr) older than this many days.")
    full_outputs_max_count: int | None = Field(None, ge=0, description="gc keeps the full outputs of at most this many runs.")
    full_outputs_max_bytes: str | None = Field(None, description="gc keeps at most this size of full outputs, e.g. 5g.")
    browser_artifacts_max_age_days: float | None = Field(
        None, ge=0, description="gc removes browser runs' screenshots and PDFs (<case>/browser/<id>/) older than this.")
    browser_artifacts_max_count: int | None = Field(None, ge=0, description="gc keeps at most this many browser runs' folders.")
    browser_artifacts_max_bytes: str | None = Field(None, description="gc keeps at most this size of browser artefacts.")

    # Alerts (scoperun.alerts): rules over the audit index and the engine, checked by the server every
    # `alert_interval` seconds and by `scoperun alerts check`; each fires once and resolves once.
    alert_webhook_url: str | None = Field(
        None, description="Where firing and resolved alerts are POSTed (JSON, Alertmanager-like, with a Slack "
        "`text` field); None = alerts are only shown and kept in the state folder.")
    alert_interval: float = Field(60.0, ge=1, description="Seconds between two alert evaluations in `scoperun serve`.")
    alert_window: float = Field(3600.0, ge=60, description="Seconds of recent runs the rate and duration rules look at.")
    alert_min_runs: int = Field(5, ge=1, description="Runs in the window before the success-rate and duration rules "
                                "judge (one failure among two runs is not an outage).")
    alert_success_rate: float = Field(0.95, ge=0, le=1, description="Fire when the window's success rate is below this.")
    alert_mean_duration: float = Field(60.0, gt=0, description="Fire when the window's mean run duration (s) is above this.")
    alert_p95_duration: float = Field(240.0, gt=0, description="Fire when the window's p95 run duration (s) is above this.")
    alert_container_start: float = Field(5.0, gt=0, description="Fire when the window's p95 container start (s) is above this.")
    alert_abandoned: int = Field(0, ge=0, description="Fire when more runs than this were abandoned in the window.")
    alert_hazards: int = Field(0, ge=0, description="Fire when more runs than this left hazards in their case in the window.")
    alert_disk_free: float = Field(0.10, ge=0, le=1, description="Fire when the workspace's or state folder's disk has "
                                   "less than this fraction free.")
    alert_verify: bool = Field(True, description="Fire when `scoperun audit verify` finds a failing problem (reads every record).")
    alert_webhook_retries: int = Field(5, ge=1, le=20, description="Delivery attempts per alert (backoff 1, 2, 4 ... s).")

    # Browser runs (scoperun.browser): their own image and roomier defaults, since Chromium
    # needs far more memory, threads and shared memory than a script.
    browser_image: str = Field("scoperun-browser:latest", description="Image browser runs use.")
    browser_memory: str = Field("2g", description="Memory limit of a browser run.")
    browser_cpus: float = Field(1.0, gt=0, le=64, description="CPU quota of a browser run, in cores.")
    browser_pids_limit: int = Field(1024, ge=64, description="Processes/threads of a browser run (Chromium has many).")
    browser_shm_size: str = Field("512m", description="/dev/shm of a browser run (Chromium's renderers share memory).")
    browser_tmp_size: str = Field("256m", description="/tmp of a browser run (Chromium's profile and cache).")

    @field_validator("memory", "tmp_size", "max_file_size", "changes_max_bytes", "browser_memory", "browser_shm_size", "browser_tmp_size")
    @classmethod
    def _check_size(cls, value: str) -> str:
        parse_memory(value)
        return value

    @field_validator("temp_scripts_max_bytes", "full_outputs_max_bytes", "browser_artifacts_max_bytes")
    @classmethod
    def _check_retention_size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)
        return value

    @field_validator("blocked_cidrs")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        return [str(ipaddress.ip_network(v.strip(), strict=False)) for v in value]

    @field_validator("container_user")
    @classmethod
    def _check_user(cls, value: str) -> str:
        uid, _, gid = value.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise ValueError("container_user must be numeric uid:gid, e.g. 1000:1000")
        if int(uid) == 0 or (gid and int(gid) == 0):
            raise ValueError("container_user must not be root (uid or gid 0)")
        return value

    @field_validator("network")
    @classmethod
    def _check_network(cls, value: str) -> str:
        if shares_a_network(value):
            raise ValueError(f"network {value!r} would share the host's or another container's network; refused")
        return value

    @property
    def memory_bytes(self) -> int:
        """The memory limit in bytes."""
        return parse_memory(self.memory)


def load_settings(**overrides: Any) -> Settings:
    """Load settings from the environment and scoperun.toml, with explicit overrides on top."""
    from pydantic import ValidationError

    from scoperun.errors import ConfigError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid scoperun settings: {problems}. Fix SCOPERUN_* variables or scoperun.toml.") from exc


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
