"""The page's queries: filters from the URL, paging, id search and the overview's figures."""

from __future__ import annotations

import json
import time
from pathlib import Path

from scoperun.audit.index import AuditIndex
from scoperun.config import Settings
from scoperun.service.page import charts, data
from scoperun.testing import fake_records


def make_index(tmp_path: Path, n: int = 300) -> tuple[AuditIndex, float]:
    audit = tmp_path / "Database" / "script_executions"
    audit.mkdir(parents=True)
    now = time.time()
    for record in fake_records(n, seed=3, now=now, span_days=2):
        (audit / f"{record['execution_id']}.json").write_text(json.dumps(record))
    index = AuditIndex(tmp_path / "index.sqlite3", audit)
    index.reindex()
    return index, now


def test_filters_come_from_the_url_and_go_back_into_it() -> None:
    """Unknown statuses and bad pages are dropped; the query string round-trips without empty values."""
    f = data.RunFilters.from_query({"case": "C1", "status": "bogus", "page": "x", "q": "exec_2026"})
    assert (f.case, f.status, f.page, f.q) == ("C1", "", 1, "exec_2026")
    assert f.query() == "case=C1&q=exec_2026" and f.query(page=3) == "case=C1&q=exec_2026&page=3"


def test_runs_page_filters_pages_and_searches_by_id(tmp_path: Path) -> None:
    """Status and case filters match the index, pages hold 50 newest-first rows, an id prefix finds its run."""
    index, now = make_index(tmp_path)
    everything = data.runs_page(index, data.RunFilters(), now=now)
    assert everything.total == 300 and everything.pages == 6 and len(everything.rows) == 50
    started = [r["started"] for r in everything.rows]
    assert started == sorted(started, reverse=True)
    failed = data.runs_page(index, data.RunFilters(status="failed"), now=now)
    assert failed.total and all(r["status"] == "failed" for r in failed.rows)
    target = everything.rows[7]["execution_id"]
    found = data.runs_page(index, data.RunFilters(q=target[:-2]), now=now)
    assert target in [r["execution_id"] for r in found.rows] and found.total < 300
    recent = data.runs_page(index, data.RunFilters(since="1d"), now=now)
    assert 0 < recent.total < 300
    bad = data.runs_page(index, data.RunFilters(since="yesterday-ish"), now=now)
    assert bad.error and bad.total == 300
    last = data.runs_page(index, data.RunFilters(page=99), now=now)
    assert last.page == 6 and len(last.rows) == 50


def test_overview_counts_and_histograms_agree(tmp_path: Path) -> None:
    """The hourly series and both histograms count the same runs as the statistics."""
    index, now = make_index(tmp_path)
    ov = data.overview(index, Settings(workspace=tmp_path), window="7d", now=now)
    assert sum(n for _, n, _, _ in ov.hours) == ov.stats.total == 300
    timed = sum(ov.stats.by_status.get(s, 0) for s in ("succeeded", "failed", "timed_out", "oom_killed", "error"))
    assert sum(n for _, n in ov.durations) == timed
    assert sum(n for _, n in ov.starts) == ov.stats.container_start.count
    svg = charts.hourly("Runs per hour", ov.hours)
    assert svg.startswith('<svg class="chart"') and 'role="img"' in svg and "<desc>300 runs" in svg


def test_chart_labels_are_escaped() -> None:
    """A label with markup is drawn as text in the SVG."""
    svg = charts.bars("t", [("<script>x</script>", 3)])
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_overview_counts_case_file_accesses(tmp_path: Path, workspace: Path) -> None:
    """The overview's statistics carry the audited case-file accesses of its window, refusals apart."""
    import pytest

    from scoperun.errors import ScopeError
    from scoperun.files import CaseFiles
    from tests.conftest import CASE

    settings = Settings(workspace=workspace)
    files = CaseFiles(settings=settings)
    files.read_file(CASE, "notes/intake.txt")
    with pytest.raises(ScopeError):
        files.read_file("nobody", "x.txt")
    index, _ = make_index(tmp_path)
    ov = data.overview(index, settings, window="24h", now=time.time())
    assert ov.stats.file_access == {"read": 2, "refused": 1}


def test_login_redirects_only_to_this_site() -> None:
    """The login's `next` is a path of this site: other hosts, schemes and smuggled whitespace become `/`."""
    from scoperun.service.page.app import _safe_next

    assert _safe_next("/runs?status=failed") == "/runs?status=failed"
    for bad in ("https://evil.example/", "//evil.example", "/\t/evil.example", "/\\evil.example", "", None,
                "javascript:alert(1)", "/\n/evil.example"):
        assert _safe_next(bad) == "/", bad
