"""The alert rules and what they measure: the audit index (rates, durations, container start,
abandoned runs), the newest records (hazards), `audit verify`, the engine and the disks."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from scoperun.audit.index import AuditIndex, read_json_file
from scoperun.audit.state import state_dir
from scoperun.config import Settings
from scoperun.errors import ScopeRunError

__all__ = ["RULES", "Measurements", "Rule", "measure"]

EXECUTED = ("succeeded", "failed", "timed_out", "oom_killed", "error", "abandoned")
TIMED = ("succeeded", "failed", "timed_out", "oom_killed", "error")
HAZARD_RECORDS_READ = 1000  # newest records of the window whose hazards are read (bounds the cost)
_HAZARDS_SEEN: dict[str, bool] = {}  # execution id -> left hazards (a finished record's hazards never change)


class Measurements(BaseModel):
    """What the rules look at, measured once per evaluation (None: not measurable now)."""

    at: float
    window: float
    executed: int = 0
    succeeded: int = 0
    success_rate: float | None = None
    mean_duration: float | None = None
    p95_duration: float | None = None
    p95_container_start: float | None = None
    abandoned: int = 0
    hazard_runs: int = 0
    engine_up: bool | None = None
    engine_detail: str = ""
    verify_ok: bool | None = None
    verify_detail: str = ""
    disk_free: dict[str, float] = Field(default_factory=dict, description="volume -> fraction free")


class Rule(BaseModel):
    """One alert rule: its name, severity, headline and how it judges the measurements."""

    name: str
    severity: Literal["critical", "warning"]
    summary: str
    check: Any = Field(exclude=True, description="(Measurements, Settings) -> description when failing, else None")


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _success(m: Measurements, s: Settings) -> str | None:
    if m.success_rate is None or m.executed < s.alert_min_runs or m.success_rate >= s.alert_success_rate:
        return None
    return (f"success rate {_pct(m.success_rate)} over the last {m.window / 60:g} min ({m.succeeded} of "
            f"{m.executed} runs) is below the target {_pct(s.alert_success_rate)}")


def _mean(m: Measurements, s: Settings) -> str | None:
    if m.mean_duration is None or m.executed < s.alert_min_runs or m.mean_duration <= s.alert_mean_duration:
        return None
    return (f"mean run duration {m.mean_duration:.1f} s over the last {m.window / 60:g} min is above "
            f"{s.alert_mean_duration:g} s")


def _p95(m: Measurements, s: Settings) -> str | None:
    if m.p95_duration is None or m.executed < s.alert_min_runs or m.p95_duration <= s.alert_p95_duration:
        return None
    return (f"p95 run duration {m.p95_duration:.1f} s over the last {m.window / 60:g} min is above "
            f"{s.alert_p95_duration:g} s")


def _start(m: Measurements, s: Settings) -> str | None:
    if m.p95_container_start is None or m.p95_container_start <= s.alert_container_start:
        return None
    return (f"p95 container start {m.p95_container_start:.2f} s over the last {m.window / 60:g} min is above "
            f"{s.alert_container_start:g} s")


def _abandoned(m: Measurements, s: Settings) -> str | None:
    if m.abandoned <= s.alert_abandoned:
        return None
    return f"{m.abandoned} run(s) abandoned in the last {m.window / 60:g} min (their process died mid-run)"


def _hazards(m: Measurements, s: Settings) -> str | None:
    if m.hazard_runs <= s.alert_hazards:
        return None
    return (f"{m.hazard_runs} run(s) in the last {m.window / 60:g} min left hazards in their case "
            f"(`scoperun audit show`)")


def _verify(m: Measurements, s: Settings) -> str | None:
    return None if m.verify_ok is None or m.verify_ok else f"audit verify fails: {m.verify_detail}"


def _engine(m: Measurements, s: Settings) -> str | None:
    return None if m.engine_up is None or m.engine_up else f"the Docker engine does not answer: {m.engine_detail}"


def _disk(m: Measurements, s: Settings) -> str | None:
    low = {k: v for k, v in m.disk_free.items() if v < s.alert_disk_free}
    if not low:
        return None
    return "; ".join(f"{k} disk has {_pct(v)} free (below {_pct(s.alert_disk_free)})" for k, v in sorted(low.items()))


RULES: tuple[Rule, ...] = (
    Rule(name="ScoperunSuccessRateLow", severity="critical", summary="Run success rate is below the target.",
         check=_success),
    Rule(name="ScoperunMeanDurationHigh", severity="warning", summary="Mean run duration is above the target.",
         check=_mean),
    Rule(name="ScoperunP95DurationHigh", severity="warning", summary="p95 run duration is above the target.",
         check=_p95),
    Rule(name="ScoperunContainerStartSlow", severity="warning", summary="Containers take too long to start.",
         check=_start),
    Rule(name="ScoperunRunsAbandoned", severity="warning", summary="Runs were abandoned mid-run.", check=_abandoned),
    Rule(name="ScoperunHazardsFound", severity="warning", summary="Runs left hazards in their case.", check=_hazards),
    Rule(name="ScoperunAuditVerifyFailing", severity="critical", summary="The audit trail does not verify.",
         check=_verify),
    Rule(name="ScoperunEngineDown", severity="critical", summary="The Docker engine is unreachable.", check=_engine),
    Rule(name="ScoperunDiskLow", severity="warning", summary="A disk scoperun writes to is nearly full.",
         check=_disk),
)





def _index(settings: Settings) -> AuditIndex:
    from scoperun.audit.log import AuditLog

    audit = AuditLog.from_settings(settings, Path(settings.workspace).expanduser().resolve())
    assert audit.index is not None
    return audit.index


def _percentile(conn: Any, column: str, cond: str, params: list[Any], count: int, p: float) -> float | None:
    if not count:
        return None
    offset = max(0, math.ceil(p * count) - 1)
    row = conn.execute(f"SELECT {column} FROM records {cond} ORDER BY {column} LIMIT 1 OFFSET ?",
                       [*params, offset]).fetchone()
    return None if row is None else row[0]


def _measure_runs(m: Measurements, index: AuditIndex) -> None:
    conn = index.connect()
    since = m.at - m.window
    counts = dict(conn.execute("SELECT status, COUNT(*) FROM records WHERE started >= ? GROUP BY status", [since]))
    m.executed = sum(counts.get(s, 0) for s in EXECUTED)
    m.succeeded = counts.get("succeeded", 0)
    m.abandoned = counts.get("abandoned", 0)
    m.success_rate = m.succeeded / m.executed if m.executed else None
    marks = ", ".join("?" * len(TIMED))
    cond = f"WHERE started >= ? AND status IN ({marks}) AND duration IS NOT NULL"
    params = [since, *TIMED]
    n, mean = conn.execute(f"SELECT COUNT(duration), AVG(duration) FROM records {cond}", params).fetchone()
    m.mean_duration = mean
    m.p95_duration = _percentile(conn, "duration", cond, params, n, 0.95)
    cond_s = f"WHERE started >= ? AND status IN ({marks}) AND container_start > 0"
    (ns,) = conn.execute(f"SELECT COUNT(container_start) FROM records {cond_s}", params).fetchone()
    m.p95_container_start = _percentile(conn, "container_start", cond_s, params, ns, 0.95)
    # Hazards are not indexed: read the newest records of the window (finished ones only).
    ids = [r[0] for r in conn.execute(
        f"SELECT execution_id FROM records WHERE started >= ? AND status IN ({marks}) ORDER BY started DESC LIMIT ?",
        [since, *TIMED, HAZARD_RECORDS_READ])]
    m.hazard_runs = sum(1 for i in ids if _left_hazards(index, i))


def _left_hazards(index: AuditIndex, execution_id: str) -> bool:
    # Each finished record is read once per process (on gcsfuse every read is a bucket request).
    known = _HAZARDS_SEEN.get(execution_id)
    if known is None:
        record = read_json_file(index.audit_dir / f"{execution_id}.json")
        known = bool(record and record.get("hazards"))
        if len(_HAZARDS_SEEN) > 20_000:
            _HAZARDS_SEEN.clear()
        _HAZARDS_SEEN[execution_id] = known
    return known


def _measure_engine(m: Measurements, settings: Settings) -> None:
    from scoperun.engine.docker import connect
    from scoperun.errors import EngineError

    try:
        client = connect(settings.docker_host, timeout=5)
        client.close()
        m.engine_up = True
    except EngineError as exc:
        m.engine_up, m.engine_detail = False, str(exc).split(". ")[0]


def _measure_verify(m: Measurements, settings: Settings, index: AuditIndex) -> None:
    from scoperun.audit.chain import FAILING_KINDS, HostChain, verify_records

    directory = index.audit_dir
    try:
        stems = sorted(p.name[:-5] for p in directory.glob("*.json") if not p.name.startswith("."))
        loaded = [(stem, read_json_file(directory / f"{stem}.json")) for stem in stems]
        head = HostChain(state_dir(settings), directory).head()
    except (OSError, ValueError, ScopeRunError) as exc:  # a verify that cannot run is a failing verify
        m.verify_ok, m.verify_detail = False, f"cannot verify ({exc})"
        return
    # Unchained records are expected only when chaining is off (as `audit verify --allow-unchained`).
    allow_unchained = not settings.audit_chain
    report = verify_records(loaded, heads=[head] if head else [], grace=settings.gc_grace,
                            default_timeout=settings.timeout, now=m.at, allow_unchained=allow_unchained)
    kinds_failing = FAILING_KINDS - ({"unchained"} if allow_unchained else set())
    failing = [f for f in report.findings if f.kind in kinds_failing]
    m.verify_ok = report.ok and not failing
    if failing:
        kinds = sorted({f.kind for f in failing})
        m.verify_detail = (f"{len(failing)} problem(s) ({', '.join(kinds)}), first: {failing[0].execution_id}: "
                           f"{failing[0].detail} (`scoperun audit verify`)")


def _measure_disk(m: Measurements, settings: Settings) -> None:
    for name, path in (("workspace", Path(settings.workspace).expanduser()), ("state", state_dir(settings))):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = shutil.disk_usage(probe)
        except OSError:
            continue
        if usage.total:
            m.disk_free[name] = usage.free / usage.total


def measure(settings: Settings, *, now: float | None = None, engine: bool = True, verify: bool | None = None,
            index: AuditIndex | None = None) -> Measurements:
    """Measure everything the rules look at; the index first catches up with the records."""
    m = Measurements(at=time.time() if now is None else now, window=settings.alert_window)
    index = index or _index(settings)
    index.reindex_if_stale(5.0)
    _measure_runs(m, index)
    if engine:
        _measure_engine(m, settings)
    if settings.alert_verify if verify is None else verify:
        _measure_verify(m, settings, index)
    _measure_disk(m, settings)
    return m


