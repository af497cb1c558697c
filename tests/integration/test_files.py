"""Cases and files on the real engine and real files: documents parsed inside the runner image, search,
writes through change sets; on a local workspace and on a FUSE-mounted bucket."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scoperun.audit.access import read_access_events
from scoperun.changes import rollback_changes
from scoperun.config import Settings
from scoperun.errors import FileAccessError
from scoperun.executor import Executor
from scoperun.files import CaseFiles
from scoperun.sample import DEFAULT_CASE_NAME, create_sample_workspace
from tests.integration import test_bucket_workspace as bucket_tests
from tests.integration.conftest import IMAGE, assert_no_containers_left, read_record

bucket = bucket_tests.bucket_mount  # the FUSE-mounted emulated GCS bucket fixture, under a name of this module

CASE = DEFAULT_CASE_NAME


def _files(workspace: Path, tmp_path: Path, **extra) -> tuple[CaseFiles, Executor]:
    settings = Settings(workspace=workspace, image=IMAGE, network="none", timeout=120, state_dir=tmp_path / "state",
                        staging_dir=tmp_path / "staging", **extra)
    ex = Executor(settings)
    return CaseFiles(ex), ex


@pytest.fixture
def local(tmp_path: Path, docker_client):
    """CaseFiles over a fresh sample workspace; proves no container is left."""
    ws = tmp_path / "ws"
    create_sample_workspace(ws)
    files, ex = _files(ws, tmp_path)
    yield files, ws
    ex.close()
    assert_no_containers_left(docker_client, ws)


def test_documents_are_extracted_in_a_container_and_cached(local) -> None:
    """PDF, DOCX, XLSX, CSV and PNG text comes from an audited read-only, offline run; a second read is cached."""
    files, ws = local
    pdf = files.read_document(CASE, "MRI_report.pdf")
    assert pdf.kind == "pdf" and pdf.units == 2 and not pdf.cached and pdf.execution_id
    assert "--- page 1 ---" in pdf.text and "--- page 2 ---" in pdf.text and "C5-C6 disc bulge" in pdf.text
    record = read_record(ws, pdf.execution_id)
    assert record["status"] == "succeeded" and record["write_mode"] == "read-only" and record["network"] == "none"
    assert record["args"] == ["MRI_report.pdf"]
    again = files.read_document(CASE, "MRI_report.pdf")
    assert again.cached and again.text == pdf.text and again.execution_id is None

    docx = files.read_document(CASE, "Medical Records/Dr Smith/Dr_Smith_consult_2025-01-22.docx")
    assert docx.kind == "docx" and docx.text.strip()
    xlsx = files.read_document(CASE, "bill_St_Marys.xlsx")
    assert xlsx.kind == "xlsx" and xlsx.text.startswith("--- sheet ") and xlsx.units >= 1
    csv = files.read_document(CASE, "expenses.csv")
    assert csv.kind == "csv" and "ER copay" in csv.text
    png = files.read_document(CASE, "X-ray_left_knee.png")
    assert png.kind == "image" and "image: PNG" in png.text and "width: 64" in png.text
    events = [e for e in read_access_events(files.settings, ws) if e["event"] == "files.read_document"]
    assert len(events) == 6 and events[1]["cached"] is True


def test_search_finds_a_phrase_inside_a_pdf(local) -> None:
    """search finds a phrase that exists only inside a PDF's text, with its page, and text files' lines."""
    files, _ = local
    found = files.search(CASE, "disc bulge")
    hits = [h for h in found.hits if h.path == "MRI_report.pdf"]
    assert hits and hits[0].page == 1 and "disc bulge" in hits[0].snippet.lower()
    assert found.documents_searched >= 5 and found.files_searched >= 3
    text_hit = files.search(CASE, "ER copay", glob="*.csv")
    assert [h.path for h in text_hit.hits] == ["expenses.csv"] and text_hit.hits[0].line == 2


def test_a_hostile_document_is_refused_not_parsed_on_the_host(local) -> None:
    """A broken 'PDF' fails inside the container and is refused with its reason; the host only hashed it."""
    files, ws = local
    hostile = b"%PDF-1.7\n" + b"\xff" * 5000 + b"\n1 0 obj << /Length 99999999 >>"
    (ws / "projects" / CASE / "evil.pdf").write_bytes(hostile)
    with pytest.raises(FileAccessError) as info:
        files.read_document(CASE, "evil.pdf")
    assert info.value.rule == "unreadable-document"
    refused = [e for e in read_access_events(files.settings, ws) if e["outcome"] == "refused"]
    assert refused[-1]["reason"] == "unreadable-document"


def test_bucket_workspace_list_read_documents_write_rollback_download(bucket, tmp_path: Path,
                                                                      docker_client) -> None:
    """On a FUSE-mounted bucket: list, read, read a PDF in a container, search, upload then rollback, download."""
    mount, gcs = bucket
    sample = tmp_path / "sample"
    create_sample_workspace(sample, owner=None)
    shutil.copytree(sample / "projects", mount / "projects")
    (mount / "Database" / "script_executions").mkdir(parents=True)
    files, ex = _files(mount, tmp_path, write_mode="direct")
    try:
        assert [c.name for c in files.cases().cases] == [CASE]
        listed = {e.path for e in files.list_files(CASE, recursive=True).entries}
        assert "Medical Records/CT_scan_head_2025-01-15.pdf" in listed
        assert "ER copay" in files.read_file(CASE, "expenses.csv").text
        pdf = files.read_document(CASE, "Medical Records/CT_scan_head_2025-01-15.pdf")
        assert "no acute intracranial abnormality" in pdf.text
        assert any(h.path == "MRI_report.pdf" for h in files.search(CASE, "disc bulge").hits)

        before = (mount / "projects" / CASE / "client_intake.txt").read_bytes()
        src = tmp_path / "new_intake.txt"
        src.write_bytes(b"rewritten on the bucket\n")
        up = files.upload(CASE, "client_intake.txt", src)
        assert up.change_set.status.value == "applied"
        bucket_tests._wait_for_objects(gcs, {f"projects/{CASE}/client_intake.txt"})
        assert (mount / "projects" / CASE / "client_intake.txt").read_bytes() == b"rewritten on the bucket\n"
        rollback_changes(files.settings, up.execution_id)
        assert (mount / "projects" / CASE / "client_intake.txt").read_bytes() == before

        dest = tmp_path / "bill.xlsx"
        files.download(CASE, "bill_St_Marys.xlsx", dest)
        assert dest.read_bytes() == (sample / "projects" / CASE / "bill_St_Marys.xlsx").read_bytes()
        record = json.loads((mount / "Database" / "script_executions" / f"{up.execution_id}.json").read_text())
        assert record["script_path"] == "scoperun:files.write" and record["changes"]["status"] == "rolled_back"
    finally:
        ex.close()
        assert_no_containers_left(docker_client, mount)


def test_documents_and_search_over_http(local) -> None:
    """Through a real server: /document returns a PDF's text parsed in a container, /search finds a phrase in it."""
    import httpx

    from scoperun.service.app import create_app
    from tests.service_helpers import serving

    files, _ = local
    with serving(create_app(files.settings, files.executor, mount_mcp=False)) as url:
        doc = httpx.get(f"{url}/v1/cases/{CASE}/document", params={"path": "Police Report/police_report_2025-01-15.pdf"},
                        timeout=120)
        assert doc.status_code == 200, doc.text
        assert doc.json()["kind"] == "pdf" and "--- page 1 ---" in doc.json()["text"]
        found = httpx.get(f"{url}/v1/cases/{CASE}/search", params={"q": "cord compression"}, timeout=120).json()
        assert [(h["path"], h["page"]) for h in found["hits"]] == [("MRI_report.pdf", 1)]
        binary = httpx.get(f"{url}/v1/cases/{CASE}/text", params={"path": "MRI_report.pdf"})
        assert binary.status_code == 422 and binary.json()["rule"] == "binary-file"


def test_an_image_without_the_extractor_says_to_rebuild(tmp_path: Path, docker_client) -> None:
    """With a runner image that lacks the extractor, read_document is refused with 'rebuild the image'."""
    ws = tmp_path / "ws"
    create_sample_workspace(ws)
    settings = Settings(workspace=ws, image=IMAGE, network="none", timeout=60, state_dir=tmp_path / "state")
    ex = Executor(settings)
    files = CaseFiles(ex)
    try:
        from scoperun.files import documents

        original = documents.EXTRACTOR
        documents.EXTRACTOR = "/opt/scoperun/not-there.py"
        try:
            with pytest.raises(FileAccessError, match=r"no document extractor .*scoperun image build"):
                files.read_document(CASE, "MRI_report.pdf")
        finally:
            documents.EXTRACTOR = original
    finally:
        ex.close()
        assert_no_containers_left(docker_client, ws)

