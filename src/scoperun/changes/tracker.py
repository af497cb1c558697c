"""The executor's side of change sets: how the case is mounted, and what a run changed in it."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scoperun.changes.overlay import StagingArea, read_upper
from scoperun.changes.safefs import CaseRoot
from scoperun.changes.snapshot import Listing, diff_listings, scan
from scoperun.changes.store import StagingState, change_lock, now, save_state, staging_root
from scoperun.changeset import ChangeSet, ChangeSetStatus, compute_totals, summarize
from scoperun.config import Settings, parse_memory
from scoperun.engine.base import BindMount, OverlayMount
from scoperun.errors import ChangesError, ScopeRunError
from scoperun.fswalk import WalkEntry, WalkReport, display_path, remove_tree
from scoperun.models import Hazard, HazardKind, Status

__all__ = ["CaseTracker", "WalkObserver", "begin_tracking", "setid_hazards"]


def setid_hazards(cs: ChangeSet | None) -> list[Hazard]:
    """Hazards for setuid/setgid bits a staged run set (its own, so `introduced`): apply cleared them."""
    import stat

    if cs is None or cs.mode != "staged" or cs.status is not ChangeSetStatus.APPLIED:
        return []
    found = []
    for c in cs.entries:
        if c.type == "file" and c.mode_after is not None:
            setid: tuple[tuple[int, HazardKind], ...] = ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"))
            for bit, kind in setid:
                if c.mode_after & bit:
                    found.append(Hazard(kind=kind, path=c.path, neutralised=True, introduced=True,
                                        detail=f"the run set {kind}; the bit was not applied to the case"))
    return found


Decide = Callable[[ChangeSet], None]


class WalkObserver(Protocol):
    """Another reader of a tracker's walk of the whole case after the run (the hazard scan), so the
    case is walked once for both; a tracker that walks no such thing never calls it."""

    def visit(self, entry: WalkEntry, walked: WalkReport) -> None:
        """One entry of the walk (`walked`: the walk's report so far)."""
        ...

    def walk_ended(self, walked: WalkReport) -> None:
        """The walk is over, whole or cut short as `walked` says (not called when it failed)."""
        ...


class CaseTracker(Protocol):
    """Mounts the case for one run and reports what the run changed."""

    events: list[dict[str, Any]]

    def mount(self, target: str) -> BindMount | OverlayMount:
        """The case's mount in the container."""
        ...

    def start(self) -> None:
        """Just before the container starts: note what the case holds."""
        ...

    def finish(self, status: Status, decide: Decide | None = None,
               observer: WalkObserver | None = None) -> ChangeSet | None:
        """After the run: the change set (applied or kept by policy).

        `decide(change_set)` is called just before anything reaches the case and must make the
        decision durable (the audit trail); if it raises, nothing is applied. OSError and
        ScopeRunError end in a change set whose note says what happened. `observer` sees the
        tracker's walk of the case after the run, if it makes one (direct mode).
        """
        ...

    def tidy(self) -> None:
        """After `finish`: remove what the run no longer needs (a staging folder that holds nothing).

        Never raises; may run on a helper thread while the record is written, and ends before the
        run's result is returned.
        """
        ...


def _finalise(cs: ChangeSet, extra: dict[str, int] | None = None) -> ChangeSet:
    cs.totals = compute_totals(cs.entries)
    for key, value in (extra or {}).items():
        setattr(cs.totals, key, value)
    cs.summary = summarize(cs.totals)
    return cs


@dataclass
class _ReadOnly:
    case_dir: Path
    events: list[dict[str, Any]] = field(default_factory=list)

    def mount(self, target: str) -> BindMount:
        return BindMount(self.case_dir, target, read_only=True)

    def start(self) -> None:
        pass

    def finish(self, status: Status, decide: Decide | None = None, observer: WalkObserver | None = None) -> None:
        return None

    def tidy(self) -> None:
        pass


def _walk_problem(report: WalkReport, what: str) -> str:
    rel, why = report.problems[0] if report.problems else (b"", "")
    where = display_path(rel)[:200] or "the case folder"
    more = f" (and {report.count - 1} more)" if report.count > 1 else ""
    return f"{what} could not be read completely: {where}: {why}{more}"


@dataclass
class _Direct:
    """Read-write bind mount; the change set is the diff of listings before and after."""

    execution_id: str
    case: str
    case_dir: Path
    budget: float = 120.0
    before: Listing = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> None:
        self.before_report = WalkReport()
        self.before = scan(self.case_dir, self.before_report)

    def mount(self, target: str) -> BindMount:
        return BindMount(self.case_dir, target, read_only=False)

    def finish(self, status: Status, decide: Decide | None = None, observer: WalkObserver | None = None) -> ChangeSet:
        cs = ChangeSet(execution_id=self.execution_id, case=self.case, mode="direct", status=ChangeSetStatus.RECORDED,
                       note="written in place (direct mode): recorded, no undo")
        after_report = WalkReport()
        try:
            with CaseRoot(self.case_dir) as root:
                after = scan(self.case_dir, after_report, deadline=time.monotonic() + self.budget,
                             visit=observer.visit if observer is not None else None)
                if observer is not None:
                    observer.walk_ended(after_report)
                cs.entries = diff_listings(self.before, after, root)
        except (OSError, ScopeRunError) as exc:
            cs.note = f"the change set could not be computed ({exc})"
        cs.complete = self.before_report.complete and after_report.complete
        for report, when in ((self.before_report, "before"), (after_report, "after")):
            if not report.complete:
                cs.note += f"; incomplete record: {_walk_problem(report, f'the case {when} the run')}"
        if not cs.entries and not cs.note.startswith("the change set"):
            cs.status = ChangeSetStatus.EMPTY
        return _finalise(cs)

    def tidy(self) -> None:
        pass


@dataclass
class _Staged:
    """Overlay mount; the run's writes wait in staging until applied (by policy or by a person)."""

    settings: Settings
    workspace_root: Path
    execution_id: str
    case: str
    case_dir: Path
    policy: str
    requested_by: str | None
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        uid, _, gid = self.settings.container_user.partition(":")
        self.area = StagingArea.create(staging_root(self.settings), self.execution_id, self.case_dir,
                                       uid=int(uid), gid=int(gid or uid))
        self.listing: Listing = {}
        self._empty = False  # the run changed nothing: `tidy` removes the staging folder
        self.state = StagingState(execution_id=self.execution_id, case=self.case, case_dir=str(self.case_dir),
                                  workspace=str(self.workspace_root), uid=int(uid), gid=int(gid or uid),
                                  phase="running", created_at=now(), updated_at=now())
        # Not fsynced: a crash loses the run, and `gc_staging` treats a folder whose state is missing
        # or unreadable as a run that died 'running'. Each state a person may act on is fsynced.
        save_state(self.area, self.state, durable=False)

    def start(self) -> None:
        self.listing_report = WalkReport()
        self.listing = scan(self.case_dir, self.listing_report)

    def mount(self, target: str) -> OverlayMount:
        return OverlayMount(lower=self.case_dir, upper=self.area.upper, work=self.area.work, target=target,
                            options=self.area.volume_options())

    def finish(self, status: Status, decide: Decide | None = None, observer: WalkObserver | None = None) -> ChangeSet:
        cs = ChangeSet(execution_id=self.execution_id, case=self.case, mode="staged", status=ChangeSetStatus.STAGED)
        deadline = time.monotonic() + self.settings.post_run_budget
        upper_report = WalkReport()
        try:
            self._wait_unmounted()
            with CaseRoot(self.case_dir) as root:
                entries, whiteouts, opaque = read_upper(self.area.upper, self.listing, root, upper_report,
                                                        limit=self.settings.changes_max_files + 1, deadline=deadline)
            cs.entries = entries
            _finalise(cs, {"whiteouts": whiteouts, "opaque_dirs": opaque})
        except (OSError, ScopeRunError) as exc:
            cs.note = (f"the change set could not be read ({exc}); the staged files are kept in {self.area.upper} "
                       f"and nothing was applied")
            self.state.phase, self.state.change_set = cs.status.value, cs
            save_state(self.area, self.state)
            return cs
        if not cs.entries and upper_report.complete:
            cs.status, cs.note = ChangeSetStatus.EMPTY, "the run changed nothing"
            self._empty = True  # its staging folder goes in `tidy`, off the run's path
            return cs
        cs.complete = upper_report.complete and self.listing_report.complete
        self.state.phase, self.state.change_set = cs.status.value, cs
        save_state(self.area, self.state)
        held = self._held(cs, upper_report, deadline)
        wanted = self.policy == "always" or (self.policy == "on-success" and status is Status.SUCCEEDED)
        if held is None and wanted and decide is not None:
            try:
                decide(cs)  # the decision to apply is in the audit trail before the case is touched
            except Exception as exc:
                held = f"the audit trail could not record the decision to apply ({exc})"
        if held is None and wanted:
            try:
                from scoperun.changes.apply import apply_staged

                with change_lock(self.settings, self.execution_id):
                    # No trail: the events go into the run's own record, finished right after this.
                    cs, events = apply_staged(self.settings, self.area, self.state, trail=None,
                                              by=self.requested_by or "scoperun")
                self.events.extend(events)
            except (OSError, ScopeRunError) as exc:
                cs.note = f"not applied: {exc}"
        else:
            why = held or ("apply policy is never" if self.policy == "never" else f"the run ended {status.value}")
            cs.note = (f"kept for review ({why}); the case is unchanged. See `scoperun changes {self.execution_id}`, "
                       f"then `scoperun apply {self.execution_id}` or `scoperun discard {self.execution_id}`")
            self.state.change_set = cs
            save_state(self.area, self.state)
        return cs

    def tidy(self) -> None:
        # A crash before this leaves a folder whose state says 'running': gc_staging removes it.
        if self._empty:
            remove_tree(self.area.root, ignore_errors=True)

    def _held(self, cs: ChangeSet, upper_report: WalkReport, deadline: float) -> str | None:
        """Why this change set must wait for a person rather than be applied by policy, or None."""
        st = self.settings
        if any(why.startswith("walk stopped after") for _, why in upper_report.problems):
            return f"the run changed more than changes_max_files = {st.changes_max_files} paths"
        if any(why.startswith("walk stopped: time") for _, why in upper_report.problems):
            return (f"reading the changes took longer than post_run_budget = {st.post_run_budget:g} s; the "
                    f"change set is incomplete")
        if not upper_report.complete:
            return _walk_problem(upper_report, "the run's changes")
        if not self.listing_report.complete:
            return _walk_problem(self.listing_report, "the case at the start")
        if cs.totals.count > st.changes_max_files:
            return f"{cs.totals.count} paths changed, more than changes_max_files = {st.changes_max_files}"
        if cs.totals.bytes_added > parse_memory(st.changes_max_bytes):
            return (f"{cs.totals.bytes_added} bytes written, more than changes_max_bytes = {st.changes_max_bytes}")
        if time.monotonic() > deadline:
            return f"reading the changes took longer than post_run_budget = {st.post_run_budget:g} s"
        return None

    def _wait_unmounted(self) -> None:
        # The backend removes the volume before returning; this only guards a slow engine.
        deadline = time.monotonic() + 10
        while self.area.is_mounted():
            if time.monotonic() > deadline:
                raise ChangesError(f"the overlay over {self.area.upper} is still mounted; its changes cannot be "
                                   f"read safely yet")
            time.sleep(0.1)


def begin_tracking(settings: Settings, *, workspace_root: Path, execution_id: str, case: str, case_dir: Path,
                   write_mode: str, apply_policy: str, requested_by: str | None) -> CaseTracker:
    """Prepare the case for a run in `write_mode`; raises ChangesError when staging cannot be set up."""
    if write_mode == "read-only":
        return _ReadOnly(case_dir)
    if write_mode == "direct":
        return _Direct(execution_id, case, case_dir, budget=settings.post_run_budget)
    problem = overlay_lower_problem(case_dir)
    if problem:
        raise ChangesError(
            f"rejected (staging-unsupported): a staged run needs an overlay on the case folder, and {problem}. "
            f"Run it with write_mode 'direct' (changes recorded, no undo; `--write-mode direct`, or "
            f"SCOPERUN_WRITE_MODE=direct for every run), or move the workspace to a filesystem that supports it.",
            execution_id=execution_id)
    return _Staged(settings, workspace_root, execution_id, case, case_dir, apply_policy, requested_by)


# getxattr answers that overlayfs copes with on a lower layer: "no such attribute" or "not supported".
_XATTR_FINE = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EACCES}


def overlay_lower_problem(case_dir: Path) -> str | None:
    """Why an overlay cannot use `case_dir` as its lower layer, or None when it can.

    Overlayfs reads `trusted.overlay.*` attributes of every lower file; a filesystem that fails
    those reads with an I/O error (seen with rclone's FUSE mount) makes every file unreadable in
    the run. Real gcsfuse answers "not supported", which overlayfs accepts.
    """
    probe = [case_dir]
    try:
        with os.scandir(case_dir) as it:
            probe += [Path(e.path) for e, _ in zip(it, range(3), strict=False)]
    except OSError:
        pass
    for path in probe:
        try:
            os.getxattr(path, "trusted.overlay.metacopy", follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since it was listed (a concurrent apply): says nothing about the filesystem
        except OSError as exc:
            if exc.errno not in _XATTR_FINE:
                return (f"its filesystem fails extended-attribute reads ({errno.errorcode.get(exc.errno or 0, exc.errno)} "
                        f"on {path.name or path})")
    return None
