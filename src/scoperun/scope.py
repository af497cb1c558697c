"""The workspace layout and every check a caller's path goes through before anything runs.

Paths are resolved to real paths (symlinks followed on the host only to *check* where they
lead) and compared with the real path of the folder they must stay in. String prefix checks
are never used: `Tools/../x` and symlinks defeat them.
"""

from __future__ import annotations

import difflib
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from scoperun.config import Settings
from scoperun.errors import ScopeError, UnsupportedScriptError, WorkspaceError

__all__ = [
    "CONTAINER_ROOT",
    "ResolvedScript",
    "Workspace",
    "check_case_name",
    "check_relative_path",
    "suggest_cases",
    "unknown_case_message",
]

CONTAINER_ROOT = PurePosixPath("/workspace")
INTERPRETERS: dict[str, tuple[Literal["python", "shell"], str]] = {
    ".py": ("python", "python"),
    ".sh": ("shell", "bash"),
}
_MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class ResolvedScript:
    """A script that passed every check: where it is on the host and in the container."""

    host_path: Path
    relative: PurePosixPath  # real path relative to the workspace root
    kind: Literal["python", "shell"]
    interpreter: str

    @property
    def container_path(self) -> PurePosixPath:
        """Where the script appears inside the container."""
        return CONTAINER_ROOT / self.relative


def _reject(rule: str, message: str, value: str | None = None) -> ScopeError:
    return ScopeError(f"rejected ({rule}): {message}", rule=rule, value=value)


def check_relative_path(value: str, *, what: str) -> PurePosixPath:
    """Refuse empty, absolute, NUL-bearing and `..` paths; return the normalised relative path."""
    if not value or not value.strip():
        raise _reject("empty-path", f"the {what} is empty", value)
    if "\x00" in value:
        raise _reject("nul-byte", f"the {what} contains a NUL byte", value)
    if "\\" in value:
        raise _reject("backslash", f"the {what} {value!r} contains a backslash; use / between folders", value)
    path = PurePosixPath(value)
    if path.is_absolute():
        raise _reject("absolute-path", f"the {what} {value!r} is absolute; give it relative to the workspace", value)
    if ".." in path.parts:
        remedy = ("give a folder inside the case, e.g. notes/2024" if "folder" in what
                  else "name the file directly, relative to the workspace")
        raise _reject("path-traversal", f"the {what} {value!r} contains '..'; {remedy}", value)
    parts = [p for p in path.parts if p != "."]
    if not parts:
        raise _reject("empty-path", f"the {what} {value!r} names no file", value)
    return PurePosixPath(*parts)


def check_case_name(name: str) -> str:
    """Accept a real case folder name (spaces, dots, unicode); refuse anything path-like."""
    if not name or not name.strip():
        raise _reject("case-name", "the case name is empty", name)
    if "\x00" in name:
        raise _reject("nul-byte", "the case name contains a NUL byte", name)
    if "/" in name or "\\" in name:
        raise _reject("case-name", f"the case name {name!r} contains a path separator; give one folder name", name)
    if name in {".", ".."} or name.startswith("."):
        raise _reject("case-name", f"the case name {name!r} is not a case folder name", name)
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise _reject("case-name", f"the case name {name!r} contains control characters", name)
    if len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        raise _reject("case-name", "the case name is longer than 255 bytes", name)
    return name


def suggest_cases(name: str, names: list[str], *, limit: int = 5) -> list[str]:
    """Case names close to `name`: case-insensitive exact, prefix and substring matches, then fuzzy ones."""
    wanted = name.casefold().strip()
    folded = {n.casefold(): n for n in names}
    found: list[str] = []

    def add(candidate: str) -> None:
        if candidate not in found and len(found) < limit:
            found.append(candidate)

    if wanted in folded:
        add(folded[wanted])
    for key, original in folded.items():
        if wanted and (key.startswith(wanted) or wanted in key):
            add(original)
    for key in difflib.get_close_matches(wanted, list(folded), n=limit, cutoff=0.75):
        add(folded[key])
    # The client's surname alone ("doe") often names the case: match on its words too, but not on
    # words most cases share ("mva", a year), which would suggest cases at random.
    def words(text: str) -> set[str]:
        return {w for w in text.replace("_", "-").replace(" ", "-").split("-") if len(w) >= 3}

    seen: dict[str, int] = {}
    for key in folded:
        for w in words(key):
            seen[w] = seen.get(w, 0) + 1
    rare = {w for w in words(wanted) if seen.get(w, 0) <= 3}
    for key, original in folded.items():
        if rare & words(key):
            add(original)
    return found


def unknown_case_message(name: str, names: list[str], projects_name: str = "projects") -> str:
    """The refusal for an unknown case: the closest case names, never a host path the caller cannot use."""
    close = suggest_cases(name, names)
    if close:
        hint = "did you mean " + ", ".join(repr(c) for c in close) + "?"
    elif names:
        hint = f"{len(names):,} cases exist, none close to that name"
    else:
        hint = f"the workspace has no cases yet (folders under {projects_name}/)"
    return (f"there is no case {name!r} under {projects_name}/; {hint} List the cases with `scoperun cases` "
            f"(agents: the list_cases tool).")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class Workspace:
    """The workspace on the host, resolved once."""

    root: Path
    projects: Path
    tools: Path
    audit_dir: Path
    temp_scripts: Path
    allowed_script_dirs: tuple[Path, ...]
    projects_name: str
    tools_name: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Workspace:
        """Resolve the configured workspace; raise WorkspaceError when it is unusable."""
        root = Path(settings.workspace).expanduser()
        if not root.is_dir():
            raise WorkspaceError(
                f"workspace {root} does not exist or is not a folder. Create it (`scoperun demo` makes a "
                f"sample one) or set SCOPERUN_WORKSPACE to your workspace (e.g. /mnt/workspace).",
                path=str(root),
            )
        root = root.resolve()
        for rel, what in [(settings.projects_dir, "projects_dir"), (settings.tools_dir, "tools_dir")]:
            check_relative_path(rel, what=what)
        projects = (root / settings.projects_dir).resolve()
        if not projects.is_dir() or not _is_within(projects, root):
            raise WorkspaceError(
                f"the workspace has no {settings.projects_dir}/ folder of cases ({projects}). "
                f"Create it, or point SCOPERUN_WORKSPACE at the right folder.",
                path=str(projects),
            )
        allowed = tuple((root / check_relative_path(d, what="allowed script folder")).resolve()
                        for d in settings.allowed_script_dirs)
        return cls(
            root=root,
            projects=projects,
            tools=(root / settings.tools_dir).resolve(),
            audit_dir=root / settings.audit_dir,
            temp_scripts=root / settings.temp_scripts_dir,
            allowed_script_dirs=allowed,
            projects_name=settings.projects_dir,
            tools_name=settings.tools_dir,
        )

    def case_dir(self, name: str) -> Path:
        """The real folder of case `name`: exactly one existing folder under projects/."""
        check_case_name(name)
        candidate = self.projects / name
        if candidate.is_symlink():
            raise _reject("case-symlink", f"case {name!r} is a symlink; cases must be real folders", name)
        if not candidate.is_dir():
            raise _reject("unknown-case", unknown_case_message(name, self.case_names(), self.projects_name), name)
        real = candidate.resolve()
        if real.parent != self.projects:
            raise _reject("case-outside", f"case {name!r} resolves outside {self.projects_name}/", name)
        return real

    def case_names(self, limit: int = 100_000) -> list[str]:
        """Names of the case folders (real folders only, hidden ones skipped), sorted, at most `limit`."""
        names: list[str] = []
        try:
            with os.scandir(self.projects) as it:
                for entry in it:
                    try:
                        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                            continue
                    except OSError:
                        continue  # vanished mid-scan
                    names.append(entry.name)
                    if len(names) >= limit:
                        break
        except OSError:
            return []
        return sorted(names)

    def container_case_dir(self, name: str) -> PurePosixPath:
        """Where the case appears inside the container."""
        return CONTAINER_ROOT / self.projects_name / name

    def resolve_script(self, script: str) -> ResolvedScript:
        """Check that `script` is a .py/.sh file inside an allowed folder, symlinks included."""
        rel = check_relative_path(script, what="script path")
        suffix = rel.suffix.lower()
        if suffix not in INTERPRETERS:
            raise UnsupportedScriptError(
                f"cannot run {script!r}: only .py (run with python) and .sh (run with bash) scripts are supported"
            )
        candidate = self.root / rel
        try:
            real = candidate.resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            raise _reject(
                "script-not-found", f"script {script!r} does not exist in the workspace ({candidate})", script
            ) from None
        if not any(_is_within(real, d) and real != d for d in self.allowed_script_dirs):
            allowed = ", ".join(str(d.relative_to(self.root)) + "/" for d in self.allowed_script_dirs)
            raise _reject(
                "script-outside-allowed",
                f"script {script!r} is not inside an allowed folder ({allowed})"
                + (" once its symlinks are followed" if real != candidate else ""),
                script,
            )
        if not real.is_file():
            raise _reject("script-not-file", f"script {script!r} is not a regular file", script)
        if real.suffix.lower() != suffix:
            raise _reject("script-kind-changed", f"script {script!r} is a symlink to a different kind of file", script)
        kind, interpreter = INTERPRETERS[suffix]
        return ResolvedScript(real, PurePosixPath(real.relative_to(self.root).as_posix()), kind, interpreter)

    def working_dir(self, case_dir: Path, case: str, sub: str | None) -> tuple[Path, PurePosixPath]:
        """Resolve a working subfolder of the case; return its host and container paths."""
        if sub is None or sub.strip() in {"", "."}:
            return case_dir, self.container_case_dir(case)
        rel = check_relative_path(sub, what="working folder")
        try:
            real = (case_dir / rel).resolve()
            is_dir = real.is_dir()
        except (OSError, RuntimeError) as exc:  # e.g. a link into /proc/1/root: resolving it is refused
            raise _reject("workdir-unresolvable", f"working folder {sub!r} cannot be resolved on the host "
                          f"({getattr(exc, 'strerror', None) or exc}); choose a plain folder of the case", sub) from None
        if not _is_within(real, case_dir):
            raise _reject("workdir-outside-case", f"working folder {sub!r} leaves the case", sub)
        if not is_dir:
            raise _reject("workdir-not-found", f"working folder {sub!r} does not exist in case {case!r}", sub)
        return real, self.container_case_dir(case) / real.relative_to(case_dir).as_posix()

    def write_temp_script(self, name: str, content: str) -> str:
        """Write an agent's script under temp_scripts without following symlinks; return its path."""
        check_relative_path(name, what="script name")
        if "/" in name:
            raise _reject("script-name", f"script name {name!r} must be a plain file name", name)
        self.temp_scripts.mkdir(parents=True, exist_ok=True)
        real_dir = self.temp_scripts.resolve()
        if not _is_within(real_dir, self.root):
            raise _reject("temp-scripts-outside", "the temp scripts folder resolves outside the workspace")
        target = real_dir / name
        # O_EXCL|O_NOFOLLOW: never overwrite another run's script, never write through a symlink.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(target, flags, 0o644)
        except FileExistsError:
            raise _reject("script-exists", f"a script named {name!r} already exists; choose another name", name) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
        return target.relative_to(self.root).as_posix()
