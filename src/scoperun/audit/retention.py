"""Retention: `scoperun gc` removes old agent scripts, full outputs and browser artefacts by age,
count and bytes (settings `*_max_age_days`, `*_max_count`, `*_max_bytes`; unset = keep).

Never removed: audit records, anything of a run still `running`, symlinks or special files (only
regular files and the browser runner's own folders, looked at with lstat). Before a file goes, its
sha256 and size are appended to `retention.jsonl` beside the records, so the record's hashes stay
checkable and `audit show` can say what was removed, when and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scoperun.config import Settings, parse_size

__all__ = ["RETENTION_LOG", "Item", "apply_retention", "removed_entry"]

RETENTION_LOG = "retention.jsonl"
_ID = re.compile(r"^(exec_\d{8}_\d{6}_[0-9a-f]{8})")


@dataclass
class Item:
    """One thing retention may remove: files of one run (a script, a run's outputs, a browser folder)."""

    kind: str
    execution_id: str
    paths: list[Path]
    mtime: float
    size: int


def _lstat_regular(path: Path) -> os.stat_result | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _temp_scripts(settings: Settings, root: Path) -> list[Item]:
    folder = root / settings.temp_scripts_dir
    items = []
    for path in _entries(folder):
        match, st = _ID.match(path.name), _lstat_regular(path)
        if match and st is not None:
            items.append(Item("temp_script", match.group(1), [path], st.st_mtime, st.st_size))
    return items


def _full_outputs(settings: Settings, root: Path) -> list[Item]:
    by_run: dict[str, Item] = {}
    for path in _entries(root / settings.audit_dir):
        if path.suffix not in (".stdout", ".stderr"):
            continue
        match, st = _ID.match(path.name), _lstat_regular(path)
        if not match or st is None or path.stem != match.group(1):
            continue
        item = by_run.setdefault(match.group(1), Item("full_output", match.group(1), [], 0.0, 0))
        item.paths.append(path)
        item.mtime, item.size = max(item.mtime, st.st_mtime), item.size + st.st_size
    return list(by_run.values())


def _browser_artifacts(settings: Settings, root: Path) -> list[Item]:
    items = []
    for case in _entries(root / settings.projects_dir):
        try:
            if not stat.S_ISDIR(case.lstat().st_mode):
                continue
        except OSError:
            continue
        for run_dir in _entries(case / "browser"):
            match = _ID.fullmatch(run_dir.name) if _ID.match(run_dir.name) else None
            try:
                st = run_dir.lstat()
            except OSError:
                continue
            if match is None or not stat.S_ISDIR(st.st_mode):
                continue  # only the runner's own folders; never through a symlink
            files = [p for p in _entries(run_dir) if _lstat_regular(p) is not None]
            size = sum(p.lstat().st_size for p in files)
            items.append(Item("browser_artifacts", match.group(1), [run_dir], st.st_mtime, size))
    return items


def _entries(folder: Path) -> list[Path]:
    try:
        if not stat.S_ISDIR(folder.lstat().st_mode):
            return []
        with os.scandir(folder) as it:
            return [folder / e.name for e in it]
    except OSError:
        return []


def _pick(items: list[Item], *, now: float, max_age_days: float | None, max_count: int | None,
          max_bytes: int | None) -> list[tuple[Item, str]]:
    """Which items go, oldest first, and why."""
    items = sorted(items, key=lambda i: i.mtime, reverse=True)  # newest first
    chosen: dict[int, str] = {}
    if max_age_days is not None:
        for n, item in enumerate(items):
            if now - item.mtime > max_age_days * 86400:
                chosen[n] = f"older than {max_age_days:g} day(s)"
    if max_count is not None:
        for n in range(max_count, len(items)):
            chosen.setdefault(n, f"more than {max_count} kept")
    if max_bytes is not None:
        total = 0
        for n, item in enumerate(items):
            total += item.size
            if total > max_bytes:
                chosen.setdefault(n, f"over {max_bytes} bytes in all")
    return [(items[n], chosen[n]) for n in sorted(chosen, reverse=True)]


def _running(settings: Settings, root: Path) -> set[str]:
    """Runs whose record says `running`: their files are in use."""
    running = set()
    for path in _entries(root / settings.audit_dir):
        if path.suffix == ".json" and _ID.match(path.name):
            try:
                with open(path, "rb") as fh:
                    head = fh.read(4096)
                if b'"status": "running"' in head or b'"status":"running"' in head:
                    running.add(path.stem)
            except OSError:
                continue
    return running


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def _remove(item: Item, why: str, root: Path, log: Path, now: float) -> None:
    entries = []
    for path in item.paths:
        files = [path] if _lstat_regular(path) is not None else [p for p in _entries(path)
                                                                    if _lstat_regular(p) is not None]
        for f in files:
            entries.append({"at": datetime.fromtimestamp(now, UTC).isoformat(), "by": "scoperun gc",
                            "kind": item.kind, "execution_id": item.execution_id,
                            "path": f.relative_to(root).as_posix(), "bytes": f.lstat().st_size,
                            "sha256": _sha256(f), "reason": why})
    with open(log, "a", encoding="utf-8") as fh:  # the hashes are kept before anything goes
        fh.write("".join(json.dumps(e) + "\n" for e in entries))
        fh.flush()
        os.fsync(fh.fileno())
    for path in item.paths:
        if _lstat_regular(path) is not None:
            path.unlink()
            continue
        for f in _entries(path):
            if _lstat_regular(f) is not None or stat.S_ISLNK(f.lstat().st_mode):
                f.unlink()
        with contextlib.suppress(OSError):  # something unexpected (a folder) inside: left for a person
            path.rmdir()


def apply_retention(settings: Settings, *, now: float | None = None, dry_run: bool = False) -> list[str]:
    """Remove what the retention settings say must go; return one line per item (what would go, dry run)."""
    now = time.time() if now is None else now
    root = Path(settings.workspace).expanduser().resolve()
    running = _running(settings, root)
    log = root / settings.audit_dir / RETENTION_LOG
    done = []
    for kind, found in (("temp_scripts", _temp_scripts), ("full_outputs", _full_outputs),
                        ("browser_artifacts", _browser_artifacts)):
        max_bytes = getattr(settings, f"{kind}_max_bytes")
        plan = _pick(found(settings, root), now=now, max_age_days=getattr(settings, f"{kind}_max_age_days"),
                     max_count=getattr(settings, f"{kind}_max_count"),
                     max_bytes=parse_size(max_bytes) if max_bytes else None)
        for item, why in plan:
            if item.execution_id in running:
                continue
            names = ", ".join(p.relative_to(root).as_posix() for p in item.paths)
            if not dry_run:
                try:
                    _remove(item, why, root, log, now)
                except OSError as exc:
                    done.append(f"{names}: not removed ({exc.strerror})")
                    continue
            done.append(f"{'would remove' if dry_run else 'removed'} {names} ({why})")
    return done


def removed_entry(settings: Settings, root: Path, rel_path: str) -> dict | None:
    """The retention log's entry for a file it removed (None when it did not)."""
    try:
        with open(root / settings.audit_dir / RETENTION_LOG, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("path") == rel_path:
                    return entry
    except OSError:
        return None
    return None
