"""Findings and hazards are typed models, yet results and audit records keep the exact JSON they always had."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from scoperun.audit.chain import canonical_json
from scoperun.audit.log import record_from_result
from scoperun.changes.tracker import setid_hazards
from scoperun.changeset import Change, ChangeSet, ChangeSetStatus
from scoperun.models import ExecutionResult, Finding, Hazard, Status
from scoperun.safety.findings import make_finding

# What a result with these findings and hazards serialised to when they were plain dicts.
EXPECTED = json.loads("""
{
 "findings": [
  {"rule": "sh-sudo", "severity": "medium", "line": 2, "column": 1,
   "message": "asks for root privileges, which the container never grants", "snippet": "sudo ls"}
 ],
 "hazards": [
  {"kind": "setuid", "path": "tool", "neutralised": true,
   "detail": "the run set setuid; the bit was not applied to the case", "introduced": true},
  {"kind": "symlink-outside", "path": "shadow",
   "detail": "symlink leading out of the case; host code must not follow it", "neutralised": false,
   "target": "/etc/shadow", "introduced": true},
  {"kind": "hardlink", "path": "h", "detail": "2 hard links, 1 of them outside the case", "neutralised": false,
   "outside_links": 1, "introduced": false},
  {"kind": "unscanned", "path": "", "detail": "hazard scan cut short (time); later entries were not checked",
   "neutralised": false},
  {"kind": "scan-summary", "path": "", "detail": "60 hazard(s) found, 50 listed"}
 ]
}
""")
# sha256 of canonical_json({"findings": ..., "hazards": ...}) of the record, as computed before the models.
EXPECTED_DIGEST = "0aba29d4fea299cdbb4b9d88e50c2181e1ae85c2ce8ccc447d450c4ca77844fe"
T = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _result() -> ExecutionResult:
    staged = ChangeSet(execution_id="exec-1", case="Doe", mode="staged", status=ChangeSetStatus.APPLIED,
                       entries=[Change(path="tool", action="added", type="file", mode_after=0o4755)])
    return ExecutionResult(
        execution_id="exec-1", status=Status.SUCCEEDED, exit_code=0, script="Tools/x.sh", case="Doe",
        started_at=T, finished_at=T,
        findings=[make_finding("sh-sudo", ["#!/bin/bash", "sudo ls"], 2, 1)],
        hazards=[
            *setid_hazards(staged),
            Hazard(kind="symlink-outside", path="shadow", target="/etc/shadow", introduced=True,
                   detail="symlink leading out of the case; host code must not follow it"),
            Hazard(kind="hardlink", path="h", detail="2 hard links, 1 of them outside the case", outside_links=1,
                   introduced=False),
            Hazard(kind="unscanned", path="", detail="hazard scan cut short (time); later entries were not checked"),
            Hazard.note("scan-summary", "60 hazard(s) found, 50 listed"),
        ])


def test_result_json_of_findings_and_hazards_is_unchanged() -> None:
    """model_dump(mode="json") of a result gives the very keys and values the dict era gave, notes included."""
    dumped = _result().model_dump(mode="json")
    assert {"findings": dumped["findings"], "hazards": dumped["hazards"]} == EXPECTED
    assert [list(h) for h in dumped["hazards"][1:]] == [list(h) for h in EXPECTED["hazards"][1:]]  # key order too


def test_result_json_round_trips_to_the_same_models_and_json() -> None:
    """A result read back from its JSON (as the HTTP client does) has equal models and dumps identically."""
    result = _result()
    again = ExecutionResult.model_validate_json(result.model_dump_json())
    assert again.findings == result.findings and again.hazards == result.hazards
    assert again.model_dump(mode="json") == result.model_dump(mode="json")
    assert isinstance(again.findings[0], Finding) and again.hazards[-1].is_note
    assert again.hazards[-1].neutralised is None and again.hazards[3].neutralised is False


def test_audit_record_hashes_the_same_bytes() -> None:
    """The record's findings and hazards are plain JSON, so the chain digest of a record is what it was."""
    record = record_from_result(_result(), script_sha256=None, env_names=[])
    part = {"findings": record["findings"], "hazards": record["hazards"]}
    assert part == EXPECTED
    assert hashlib.sha256(canonical_json(part)).hexdigest() == EXPECTED_DIGEST
    assert json.loads(json.dumps(record))["hazards"] == EXPECTED["hazards"]


def test_old_records_load_as_models() -> None:
    """Findings and hazards of a record written before the models validate, and dump back unchanged."""
    hazards = [Hazard.model_validate(h) for h in EXPECTED["hazards"]]
    findings = [Finding.model_validate(f) for f in EXPECTED["findings"]]
    assert [h.model_dump() for h in hazards] == EXPECTED["hazards"]
    assert [f.model_dump() for f in findings] == EXPECTED["findings"]
    failed = Hazard.model_validate({"kind": "scan-failed", "path": "", "detail": "hazard scan failed: gone"})
    assert failed.is_note and failed.model_dump() == {"kind": "scan-failed", "path": "", "detail": "hazard scan failed: gone"}


def test_audit_show_lines_for_findings_and_hazards_of_any_record() -> None:
    """`audit show` reads a record's findings and hazards as models; an edited entry is still shown, never a crash."""
    from pathlib import Path

    from scoperun.cli.audit import _record_summary

    record = {"execution_id": "exec-1", "status": "succeeded", **EXPECTED}
    record["hazards"] = [*EXPECTED["hazards"], {"kind": "made-up", "path": "x", "detail": "edited"}, "junk"]
    text = "\n".join(_record_summary(record, Path("/w")))
    assert "line 2: sh-sudo asks for root privileges" in text
    assert "symlink-outside shadow: symlink leading out of the case" in text
    assert "scan-summary : 60 hazard(s) found, 50 listed" in text
    assert "made-up x: edited" in text and "None None: None" in text
