"""Tamper evidence: each finished record, and each event of the event log, carries the sha256 of
the previous entry of the same host's chain, and `verify` finds records and events modified,
deleted or re-ordered, and runs never finished.

A chain belongs to one host and one audit folder. Its head (chain id, last position, last
digest) lives in the host-local state folder beside a lock file; every scoperun process and
thread on the host takes the lock (`flock`) to link a record, so concurrent runs keep one
valid chain. A record's digest covers all of it, its link to the previous record included,
except its own position number: a record whose position was changed is then reported as
re-ordered (its link still names its true predecessor), not merely as modified.

Limits, stated plainly: whoever can rewrite the state folder and every record can forge a
chain; deleting the newest records is found only on the host that holds the chain's head.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from scoperun.atomicio import write_bytes_atomic
from scoperun.audit.state import HOST, audit_dir_key, stale_run
from scoperun.errors import AuditError

__all__ = ["GENESIS", "ChainFinding", "HostChain", "VerifyReport", "record_digest", "verify_records"]

GENESIS = "0" * 64
FindingKind = Literal["modified", "deleted", "reordered", "unfinished", "abandoned", "unchained"]
# Kinds that make `verify` fail. `abandoned` (never finished, already accounted for by gc) only
# informs. A finished record without a chain link fails: anyone can drop a forged record in the
# folder without one (`--allow-unchained` accepts records written before chaining existed).
FAILING_KINDS = frozenset({"modified", "deleted", "reordered", "unfinished", "unchained"})
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def canonical_json(record: dict[str, Any]) -> bytes:
    """The bytes a digest is taken of: sorted keys, no whitespace, UTF-8."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of a record as parsed from its file, without its own chain position."""
    body = dict(record)
    chain = dict(body.get("chain") or {})
    chain.pop("seq", None)
    body["chain"] = chain
    return hashlib.sha256(canonical_json(body)).hexdigest()


class HostChain:
    """The chain of one audit folder on this host: lock file + head file in the state folder."""

    def __init__(self, state_dir: Path, audit_dir: Path) -> None:
        folder = Path(state_dir) / "chains"
        key = audit_dir_key(audit_dir)
        self.folder = folder
        self.head_path = folder / f"{key}.json"
        self.lock_path = folder / f"{key}.lock"
        self.audit_dir = str(Path(audit_dir).expanduser().resolve())

    def head(self) -> dict[str, Any] | None:
        """The head as stored (id, seq, sha256, execution_id), or None before the first link."""
        try:
            head: dict[str, Any] = json.loads(self.head_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise AuditError(f"audit chain head {self.head_path} is unreadable ({exc}); restore it from a "
                             f"backup or move it aside to start a new chain") from None
        return head

    @contextmanager
    def link(self, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Hold the chain lock, set `record["chain"]`, let the caller write it, then advance the head.

        The caller must yield back only after the record is durably written; if it raises, the
        head does not move.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with _thread_lock(str(self.lock_path)):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other scoperun processes on this host
                head = self.head() or {"id": secrets.token_hex(8), "seq": 0, "sha256": GENESIS}
                record["chain"] = {"id": head["id"], "host": HOST, "seq": int(head["seq"]) + 1,
                                   "prev_sha256": head["sha256"]}
                yield record
                # Digest of what a reader will parse back, not of the in-memory objects.
                parsed = json.loads(json.dumps(record, default=str))
                new_head = {"id": head["id"], "seq": record["chain"]["seq"], "sha256": record_digest(parsed),
                            "execution_id": record.get("execution_id"), "audit_dir": self.audit_dir,
                            "host": HOST, "updated": time.time()}
                write_bytes_atomic(self.head_path, json.dumps(new_head, indent=2).encode(), 0o666)
            finally:
                os.close(fd)  # releases the flock


@contextmanager
def _thread_lock(key: str) -> Iterator[None]:
    with _THREAD_LOCKS_GUARD:
        lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with lock:
        yield


# -- verification -----------------------------------------------------------------------------


class ChainFinding(BaseModel):
    """One problem `verify` found, with what to do about it in `detail`."""

    kind: FindingKind
    execution_id: str | None = None
    chain_id: str | None = None
    seq: int | None = None
    detail: str


class VerifyReport(BaseModel):
    """The outcome of verifying one audit folder."""

    ok: bool = Field(description="False when any record or event was modified, deleted, re-ordered, or a run never finished.")
    records: int
    events: int = Field(0, description="Entries of the event log (apply, discard, rollback, ...).")
    chained: int
    chains: dict[str, int] = Field(default_factory=dict, description="Chain id -> number of records in it.")
    findings: list[ChainFinding] = Field(default_factory=list)

    def count(self, kind: str) -> int:
        """How many findings of one kind."""
        return sum(1 for f in self.findings if f.kind == kind)


def _unfinished(record: dict[str, Any], *, now: float, grace: float, default_timeout: float) -> str | None:
    stale = stale_run(record, now=now, grace=grace, default_timeout=default_timeout)
    if stale is None:
        return None
    if stale.why == "process-gone":
        return (f"still 'running' but its scoperun process {stale.pid} on {stale.host} is gone; "
                f"`scoperun gc` marks it abandoned")
    return f"still 'running' {stale.elapsed:.0f} s after it started (timeout {stale.timeout:g} s)"


def verify_records(
    loaded: list[tuple[str, dict[str, Any] | None]],
    *,
    events: list[tuple[str, dict[str, Any] | None]] | None = None,
    heads: list[dict[str, Any]] | None = None,
    now: float | None = None,
    grace: float = 120.0,
    default_timeout: float = 300.0,
    allow_unchained: bool = False,
) -> VerifyReport:
    """Check `(file stem, parsed record or None if unreadable)` pairs, and the event log's
    `(name "<execution_id>/<file>", parsed event or None)` pairs, against their chains and `heads`.

    `allow_unchained` reports finished records and events without a chain link but does not fail on them.
    """
    now = time.time() if now is None else now
    findings: list[ChainFinding] = []
    chains: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for name, event in events or []:
        owner = name.split("/", 1)[0]
        if not isinstance(event, dict):
            findings.append(ChainFinding(kind="modified", execution_id=owner,
                                         detail=f"event {name} is not valid JSON any more"))
            continue
        if event.get("execution_id") != owner:
            findings.append(ChainFinding(kind="modified", execution_id=owner,
                                         detail=f"event {name} is about {event.get('execution_id')!r}"))
        chain = event.get("chain")
        if isinstance(chain, dict) and chain.get("id"):
            chains.setdefault(str(chain["id"]), []).append((event, record_digest(event)))
        else:
            findings.append(ChainFinding(kind="unchained", execution_id=owner,
                                         detail=f"event {name} ({event.get('event')}) without a chain link"))
    for stem, record in loaded:
        if record is None or not isinstance(record, dict):
            findings.append(ChainFinding(kind="modified", execution_id=stem,
                                         detail="the record is not valid JSON any more"))
            continue
        if record.get("execution_id") != stem:
            findings.append(ChainFinding(kind="modified", execution_id=stem,
                                         detail=f"file {stem}.json holds the record of {record.get('execution_id')!r}"))
        if record.get("status") == "abandoned":
            findings.append(ChainFinding(kind="abandoned", execution_id=stem,
                                         detail=f"started but never finished: {record.get('message', '')}"))
        reason = _unfinished(record, now=now, grace=grace, default_timeout=default_timeout)
        if reason:
            findings.append(ChainFinding(kind="unfinished", execution_id=stem, detail=reason))
        chain = record.get("chain")
        if isinstance(chain, dict) and chain.get("id"):
            chains.setdefault(str(chain["id"]), []).append((record, record_digest(record)))
        elif record.get("status") != "running":
            findings.append(ChainFinding(kind="unchained", execution_id=stem, detail=(
                "finished record without a chain link: forged, or written before chaining or with the chain "
                "disabled; if you know it is genuine, re-run with --allow-unchained")))
    heads_by_id = {h.get("id"): h for h in heads or []}
    for chain_id, members in chains.items():
        findings.extend(_verify_chain(chain_id, members, heads_by_id.get(chain_id)))
    for head_id, head in heads_by_id.items():
        if head_id not in chains and int(head.get("seq") or 0) > 0:
            # The folder is empty, replaced or moved: the host knows records were written to it.
            folder = head.get("audit_dir") or "this audit folder"
            findings.append(ChainFinding(kind="deleted", chain_id=head_id, seq=int(head["seq"]),
                                         execution_id=head.get("execution_id"), detail=(
                f"this host's chain head says {head['seq']} record(s) were written to {folder} (newest "
                f"{head.get('execution_id')}); none of them is here. Restore the audit folder from a backup, "
                f"or point --workspace at where it moved")))
    chained = sum(len(m) for m in chains.values())
    failing = FAILING_KINDS - ({"unchained"} if allow_unchained else set())
    ok = not any(f.kind in failing for f in findings)
    return VerifyReport(ok=ok, records=len(loaded), events=len(events or []), chained=chained,
                        chains={k: len(v) for k, v in chains.items()}, findings=findings)


def _verify_chain(chain_id: str, members: list[tuple[dict[str, Any], str]],
                  head: dict[str, Any] | None) -> list[ChainFinding]:
    found: list[ChainFinding] = []
    seen: set[tuple[str, int]] = set()

    def add(kind: FindingKind, seq: int, execution_id: str | None, detail: str) -> None:
        if (kind, seq) not in seen:
            seen.add((kind, seq))
            found.append(ChainFinding(kind=kind, chain_id=chain_id, seq=seq, execution_id=execution_id, detail=detail))

    by_digest = {digest: record for record, digest in members}
    by_seq: dict[int, list[tuple[dict[str, Any], str]]] = {}
    for record, digest in members:
        by_seq.setdefault(int(record["chain"].get("seq") or 0), []).append((record, digest))
    for seq, group in by_seq.items():
        if len(group) > 1:
            ids = ", ".join(str(r.get("execution_id")) for r, _ in group)
            add("reordered", seq, None, f"several records claim position {seq}: {ids}")
    for record, _ in members:
        seq = int(record["chain"].get("seq") or 0)
        rid = record.get("execution_id")
        prev = record["chain"].get("prev_sha256")
        if prev == GENESIS:
            if seq != 1:
                add("reordered", seq, rid, f"starts the chain but claims position {seq}")
            continue
        before = by_digest.get(prev)
        if before is not None:
            before_seq = int(before["chain"].get("seq") or 0)
            if before_seq != seq - 1:
                add("reordered", seq, rid, f"follows {before.get('execution_id')} (position {before_seq}) "
                                           f"but claims position {seq}")
            continue
        candidates = by_seq.get(seq - 1, [])
        if candidates:
            cand = candidates[0][0]
            add("modified", seq - 1, cand.get("execution_id"),
                f"its content no longer matches the hash that {rid} (position {seq}) carries")
        else:
            add("deleted", seq - 1, None, f"the record or event before {rid} (position {seq - 1}) is missing")
    present = set(by_seq)
    top = max(present) if present else 0
    if head is not None and int(head.get("seq", 0)) > top:
        top = int(head["seq"])
    for seq in range(1, top + 1):
        if seq not in present:
            add("deleted", seq, head.get("execution_id") if head and int(head.get("seq", 0)) == seq else None,
                f"no record or event holds position {seq} of the chain")
    if head is not None:
        at_head = by_seq.get(int(head.get("seq", 0)), [])
        if at_head and all(d != head.get("sha256") for _, d in at_head):
            add("modified", int(head["seq"]), at_head[0][0].get("execution_id"),
                "the newest record or event no longer matches the hash this host's chain head holds")
    return found
