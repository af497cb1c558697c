"""The sample workspace: real, valid files; idempotent creation; the two sample tools on the host."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from scoperun.errors import ScopeError, WorkspaceError
from scoperun.sample import DEFAULT_CASE_NAME, SAMPLE_TOOLS, create_sample_workspace

BASH = shutil.which("bash")


@pytest.fixture()
def case(tmp_path: Path) -> Path:
    return create_sample_workspace(tmp_path / "ws", owner=None)


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (
            st.st_mode,
            st.st_size,
            st.st_mtime_ns,
            p.read_bytes() if p.is_file() else None,
        )
    return out


def _case_files(case: Path) -> set[str]:
    return {str(p.relative_to(case)) for p in case.rglob("*") if p.is_file()}


def test_layout(case: Path) -> None:
    """The workspace has projects/<case>, Tools with both tools, and both Database folders."""
    ws = case.parent.parent
    assert case == ws / "projects" / DEFAULT_CASE_NAME
    for d in ("Tools", "Database/script_executions", "Database/temp_scripts"):
        assert (ws / d).is_dir()
    assert sorted(p.name for p in (ws / "Tools").iterdir()) == sorted(SAMPLE_TOOLS)
    for d in ("Medical Records/Dr Smith", "Correspondence/2025", "Police Report"):
        assert (case / d).is_dir()
    for f in (
        "ER_visit_2025-01-15.pdf",
        "MRI_report.pdf",
        "PT_notes_week1.txt",
        "bill_St_Marys.xlsx",
        "X-ray_left_knee.png",
        "expenses.csv",
        "client_intake.txt",
    ):
        assert (case / f).is_file()


def test_pdf_structure_is_valid_without_libraries(case: Path) -> None:
    """Every PDF's xref table points exactly at its objects and the file ends with %%EOF."""
    for pdf in case.rglob("*.pdf"):
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF")
        xref_at = int(data.rsplit(b"startxref", 1)[1].split()[0])
        assert data[xref_at:].startswith(b"xref")
        lines = data[xref_at:].split(b"\n")
        count = int(lines[1].split()[1])
        for number in range(1, count):
            offset = int(lines[2 + number][:10])
            assert data[offset:].startswith(b"%d 0 obj" % number)


def test_pdf_opens_with_pypdf(case: Path) -> None:
    """pypdf reads the multi-page ER PDF and extracts its text from every page."""
    pypdf = pytest.importorskip("pypdf")
    reader = pypdf.PdfReader(case / "ER_visit_2025-01-15.pdf")
    assert len(reader.pages) == 3
    assert "Emergency Department" in reader.pages[0].extract_text()
    assert "cervical strain" in reader.pages[1].extract_text()


def test_xlsx_is_a_valid_package(case: Path) -> None:
    """The .xlsx is an intact zip with the SpreadsheetML parts a reader needs."""
    with zipfile.ZipFile(case / "bill_St_Marys.xlsx") as zf:
        assert zf.testzip() is None
        assert {"[Content_Types].xml", "xl/workbook.xml", "xl/worksheets/sheet1.xml"} <= set(zf.namelist())


def test_xlsx_loads_with_openpyxl(case: Path) -> None:
    """openpyxl loads the bill without warnings, with string headers and numeric amounts."""
    openpyxl = pytest.importorskip("openpyxl")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wb = openpyxl.load_workbook(case / "bill_St_Marys.xlsx")
    rows = list(wb.active.iter_rows(values_only=True))
    assert rows[0] == ("Date", "Provider", "Description", "CPT", "Amount")
    assert rows[1][4] == 1850.0 and len(rows) == 4


def test_docx_loads_with_python_docx(case: Path) -> None:
    """python-docx opens both .docx files and reads their paragraphs."""
    docx = pytest.importorskip("docx")
    doc = docx.Document(str(case / "Medical Records/Dr Smith/Dr_Smith_consult_2025-01-22.docx"))
    assert doc.paragraphs[0].text == "Orthopedic consultation - Dr. J. Smith"
    letter = docx.Document(str(case / "Correspondence/2025/letter_to_insurer_2025-02-01.docx"))
    assert any("Jane Doe" in p.text for p in letter.paragraphs)


def test_png_is_valid(case: Path) -> None:
    """The PNG has correct chunk CRCs, a 64x48 RGB header and image data of the right size."""
    data = (case / "X-ray_left_knee.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, colour) == (64, 48, 8, 2)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)


def test_second_call_changes_nothing(tmp_path: Path) -> None:
    """Calling create_sample_workspace again leaves every file, mode and mtime as it was."""
    root = tmp_path / "ws"
    first = create_sample_workspace(root, owner=None)
    before = _snapshot(root)
    assert create_sample_workspace(root, owner=None) == first
    assert _snapshot(root) == before


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    """A user's edited file survives a new call, and only missing files are filled in."""
    root = tmp_path / "ws"
    case = create_sample_workspace(root, owner=None)
    (case / "client_intake.txt").write_text("edited by the firm")
    (case / "MRI_report.pdf").unlink()
    create_sample_workspace(root, owner=None)
    assert (case / "client_intake.txt").read_text() == "edited by the firm"
    assert (case / "MRI_report.pdf").is_file()


def test_bad_case_name_is_refused(tmp_path: Path) -> None:
    """A case name with a slash or '..' raises ScopeError and creates nothing."""
    for bad in ("../escape", "a/b", "..", ""):
        with pytest.raises(ScopeError):
            create_sample_workspace(tmp_path / "ws", case_name=bad, owner=None)
    assert not (tmp_path / "ws").exists()


def test_symlinked_folder_is_refused(tmp_path: Path) -> None:
    """A symlink where a sample folder should be raises WorkspaceError instead of writing through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "ws" / "projects").mkdir(parents=True)
    (tmp_path / "ws" / "projects" / DEFAULT_CASE_NAME).symlink_to(outside)
    with pytest.raises(WorkspaceError):
        create_sample_workspace(tmp_path / "ws", owner=None)
    assert list(outside.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_ownership_as_root(tmp_path: Path) -> None:
    """As root, the case tree and Database go to the owner; Tools stays root's and read-only for others."""
    case = create_sample_workspace(tmp_path / "ws", owner=(1000, 1000))
    ws = case.parent.parent
    for p in [ws / "projects", ws / "Database", ws / "Database/temp_scripts", *case.rglob("*"), case]:
        assert (p.stat().st_uid, p.stat().st_gid) == (1000, 1000), p
    for p in [ws / "Tools", *(ws / "Tools").iterdir()]:
        assert p.stat().st_uid == 0 and not p.stat().st_mode & 0o022, p
    assert ws.stat().st_uid == 0


def _inventory(case: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tool = case.parent.parent / "Tools" / "create_file_inventory.py"
    return subprocess.run(
        [sys.executable, str(tool), *args], cwd=case, capture_output=True, text=True, timeout=120, check=False
    )


def test_inventory_json_is_correct(case: Path) -> None:
    """The inventory tool lists every case file with its true size and sha256, and not its own output."""
    proc = _inventory(case, "--format", "json", "--output", "inventory.json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((case / "inventory.json").read_text())
    by_path = {e["path"]: e for e in doc["files"]}
    assert set(by_path) == _case_files(case) - {"inventory.json"}
    for rel, entry in by_path.items():
        data = (case / rel).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["file_count"] == len(by_path)
    assert by_path["ER_visit_2025-01-15.pdf"]["type"] == "application/pdf"
    if importlib.util.find_spec("pypdf") is not None:
        assert by_path["ER_visit_2025-01-15.pdf"]["pages"] == 3
    # A second run must still skip its own (now existing) output.
    assert _inventory(case, "--format", "json", "--output", "inventory.json").returncode == 0
    assert "inventory.json" not in {e["path"] for e in json.loads((case / "inventory.json").read_text())["files"]}


def test_inventory_never_follows_symlinks(case: Path, tmp_path: Path) -> None:
    """A symlink in the case is listed as a symlink, never read or hashed."""
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the case")
    (case / "link.txt").symlink_to(secret)
    (case / "linkdir").symlink_to(tmp_path)
    doc = json.loads(_inventory(case, "--format", "json").stdout)
    by_path = {e["path"]: e for e in doc["files"]}
    assert by_path["link.txt"]["type"].startswith("symlink") and by_path["link.txt"]["sha256"] is None
    assert by_path["linkdir"]["type"].startswith("symlink")
    assert not any(p.startswith("linkdir/") for p in by_path)


def test_inventory_dry_run_and_formats(case: Path) -> None:
    """--dry-run writes nothing; md and csv outputs list the PDF."""
    proc = _inventory(case, "--format", "csv", "--output", "inv.csv", "--dry-run")
    assert proc.returncode == 0 and "would write" in proc.stdout and "ER_visit_2025-01-15.pdf" in proc.stdout
    assert not (case / "inv.csv").exists()
    md = _inventory(case).stdout
    assert md.startswith("# File inventory") and "| ER_visit_2025-01-15.pdf |" in md


def test_inventory_rejects_bad_args(case: Path) -> None:
    """An unknown format or flag exits non-zero with a message naming the problem."""
    proc = _inventory(case, "--format", "xml")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = _inventory(case, "--output", "Medical Records")
    assert proc.returncode == 2 and "is a directory" in proc.stderr


def _organize(case: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tool = case.parent.parent / "Tools" / "organize_medical_subfolders.sh"
    return subprocess.run([BASH, str(tool), *args], cwd=case, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_organize_dry_run_changes_nothing(case: Path) -> None:
    """--dry-run prints the planned moves and leaves the case untouched."""
    before = _snapshot(case)
    proc = _organize(case, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would move: 'MRI_report.pdf' -> 'Medical Records/Imaging/MRI_report.pdf'" in proc.stdout
    assert _snapshot(case) == before


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_organize_moves_files(case: Path, tmp_path: Path) -> None:
    """The organize tool sorts medical files into subfolders, keeps others, and never follows symlinks."""
    outside = tmp_path / "ER_outside.pdf"
    outside.write_text("not in the case")
    (case / "ER_link.pdf").symlink_to(outside)
    (case / "Medical Records" / "Bills").mkdir()
    (case / "Medical Records" / "Bills" / "bill_St_Marys.xlsx").write_text("already there")
    proc = _organize(case)
    assert proc.returncode == 0, proc.stderr
    mr = case / "Medical Records"
    assert sorted(p.name for p in mr.iterdir()) == ["Bills", "Dr Smith", "ER", "Imaging", "Other", "Physical Therapy"]
    assert (mr / "ER/ER_visit_2025-01-15.pdf").is_file()
    assert {p.name for p in (mr / "Imaging").iterdir()} == {
        "MRI_report.pdf",
        "X-ray_left_knee.png",
        "CT_scan_head_2025-01-15.pdf",
    }
    assert {p.name for p in (mr / "Physical Therapy").iterdir()} == {"PT_notes_week1.txt", "PT_notes_week2.txt"}
    assert (mr / "Other/records_request_2025-02-20.txt").is_file()
    assert (mr / "Bills/invoice_Valley_Imaging.csv").is_file()
    # An existing destination is not overwritten; the source stays.
    assert (mr / "Bills/bill_St_Marys.xlsx").read_text() == "already there" and (case / "bill_St_Marys.xlsx").is_file()
    assert (case / "ER_link.pdf").is_symlink() and outside.read_text() == "not in the case"
    assert (case / "client_intake.txt").is_file() and (mr / "Dr Smith/Dr_Smith_consult_2025-01-22.docx").is_file()
    assert "total moved: 8" in proc.stdout and "skipped           1" in proc.stdout
    assert "total moved: 0" in _organize(case).stdout


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_organize_rejects_unknown_args(case: Path) -> None:
    """An unknown argument exits 2 with a message and moves nothing."""
    before = _snapshot(case)
    proc = _organize(case, "--force")
    assert proc.returncode == 2 and "unknown argument" in proc.stderr
    assert _snapshot(case) == before
