"""A sample workspace for the demo and the tests: one case of real files and the firm's tools.

Everything is generated with the standard library (PDF, XLSX, DOCX, PNG written by hand), so
the host needs no document libraries. Creating it never overwrites or deletes anything.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from xml.sax.saxutils import escape

from scoperun.errors import ScopeError, WorkspaceError

__all__ = ["DEFAULT_CASE_NAME", "SAMPLE_TOOLS", "create_sample_workspace", "sample_tool_source"]

DEFAULT_CASE_NAME = "Sample-Client-MVA-1-15-2025"
SAMPLE_TOOLS = ("create_file_inventory.py", "organize_medical_subfolders.sh")

# Fixed timestamp inside the zip containers: the same call always produces the same bytes.
_ZIP_DATE = (2025, 1, 15, 9, 0, 0)


# --- file formats --------------------------------------------------------------------------


def _pdf_text(text: str) -> str:
    """Escape text for a PDF literal string."""
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]], *, title: str) -> bytes:
    """A valid PDF 1.4 with one page of Helvetica text lines per entry of `pages`."""
    n = len(pages)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(n))}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "16 TL", "72 720 Td"]
        ops += [f"({_pdf_text(line)}) Tj T*" for line in lines]
        ops += ["ET"]
        content = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objects.append(f"<< /Title ({_pdf_text(title)}) /Producer (scoperun sample) >>".encode("latin-1"))
    info_ref = len(objects)

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # binary comment: marks the file as binary
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        info_ref,
        xref,
    )
    return bytes(out)


def _zip(parts: dict[str, str]) -> bytes:
    """A deflated zip (an OOXML package) of the given text parts, with fixed timestamps."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in parts.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_PKG_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_SML = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_CT = "application/vnd.openxmlformats-officedocument"


def _col(index: int) -> str:
    """Spreadsheet column letters for a 0-based index (0 -> A, 26 -> AA)."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _content_types(*overrides: tuple[str, str]) -> str:
    """The [Content_Types].xml of an OOXML package: the two defaults plus (part, type suffix) overrides."""
    parts = "".join(f'<Override PartName="{part}" ContentType="{_CT}.{kind}"/>' for part, kind in overrides)
    return (
        _XML
        + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        + parts
        + "</Types>"
    )


def make_xlsx(rows: list[list[str | float | int]], *, sheet: str = "Sheet1") -> bytes:
    """A minimal valid .xlsx: one worksheet, inline strings and numbers, a default style."""
    cells = []
    for r, row in enumerate(rows, start=1):
        cs = []
        for c, value in enumerate(row):
            ref = f"{_col(c)}{r}"
            if isinstance(value, (int, float)):
                cs.append(f'<c r="{ref}"><v>{value}</v></c>')
            else:
                cs.append(f'<c r="{ref}" t="inlineStr"><is><t>{escape(value)}</t></is></c>')
        cells.append(f'<row r="{r}">{"".join(cs)}</row>')
    return _zip(
        {
            "[Content_Types].xml": _content_types(("/xl/workbook.xml", "spreadsheetml.sheet.main+xml"), ("/xl/worksheets/sheet1.xml", "spreadsheetml.worksheet+xml"), ("/xl/styles.xml", "spreadsheetml.styles+xml")),
            "_rels/.rels": _XML
            + (
                f'<Relationships xmlns="{_PKG_RELS}">'
                f'<Relationship Id="rId1" Type="{_DOC_RELS}/officeDocument" Target="xl/workbook.xml"/>'
                "</Relationships>"
            ),
            "xl/workbook.xml": _XML
            + (
                f'<workbook xmlns="{_SML}" xmlns:r="{_DOC_RELS}">'
                f'<sheets><sheet name="{escape(sheet)}" sheetId="1" r:id="rId1"/></sheets></workbook>'
            ),
            "xl/_rels/workbook.xml.rels": _XML
            + (
                f'<Relationships xmlns="{_PKG_RELS}">'
                f'<Relationship Id="rId1" Type="{_DOC_RELS}/worksheet" Target="worksheets/sheet1.xml"/>'
                f'<Relationship Id="rId2" Type="{_DOC_RELS}/styles" Target="styles.xml"/>'
                "</Relationships>"
            ),
            # A default style keeps openpyxl from warning that the workbook has none.
            "xl/styles.xml": _XML
            + (
                f'<styleSheet xmlns="{_SML}">'
                '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
                '<fills count="2"><fill><patternFill patternType="none"/></fill>'
                '<fill><patternFill patternType="gray125"/></fill></fills>'
                '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
                '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
                '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
                '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
                "</styleSheet>"
            ),
            "xl/worksheets/sheet1.xml": _XML
            + f'<worksheet xmlns="{_SML}"><sheetData>{"".join(cells)}</sheetData></worksheet>',
        }
    )


def make_docx(paragraphs: list[str]) -> bytes:
    """A minimal valid .docx holding the given paragraphs."""
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "".join(f'<w:p><w:r><w:t xml:space="preserve">{escape(p)}</w:t></w:r></w:p>' for p in paragraphs)
    return _zip(
        {
            "[Content_Types].xml": _content_types(("/word/document.xml", "wordprocessingml.document.main+xml")),
            "_rels/.rels": _XML
            + (
                f'<Relationships xmlns="{_PKG_RELS}">'
                f'<Relationship Id="rId1" Type="{_DOC_RELS}/officeDocument" Target="word/document.xml"/>'
                "</Relationships>"
            ),
            "word/document.xml": _XML + f'<w:document xmlns:w="{w}"><w:body>{body}<w:sectPr/></w:body></w:document>',
        }
    )


def make_png(width: int = 64, height: int = 48) -> bytes:
    """A valid 8-bit RGB PNG with a colour gradient."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter type 0 (None) for every scanline
        for x in range(width):
            raw += bytes((x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")
    )


# --- the sample case -----------------------------------------------------------------------


def _case_files() -> dict[str, Callable[[], bytes]]:
    """Relative path in the case -> a function producing its bytes (all names fictional)."""

    def text(s: str) -> Callable[[], bytes]:
        return lambda: s.encode("utf-8")

    return {
        "ER_visit_2025-01-15.pdf": lambda: make_pdf(
            [
                [
                    "St. Mary's Hospital - Emergency Department",
                    "Patient: Jane Doe   DOB: 1988-04-02",
                    "Date of service: 2025-01-15",
                    "Chief complaint: neck and left knee pain after motor vehicle collision.",
                ],
                [
                    "Assessment: cervical strain; left knee contusion.",
                    "Imaging ordered: X-ray left knee; CT head negative.",
                    "Disposition: discharged home; follow up with Dr. Smith in one week.",
                ],
                ["Attending physician: A. Patel, MD", "Page 3 of 3 - end of ER record."],
            ],
            title="ER visit 2025-01-15",
        ),
        "MRI_report.pdf": lambda: make_pdf(
            [
                [
                    "Valley Imaging Center - MRI Cervical Spine",
                    "Patient: Jane Doe   Date: 2025-02-03",
                    "Impression: mild C5-C6 disc bulge without cord compression.",
                ],
                ["Radiologist: R. Gomez, MD", "Recommendation: physical therapy; clinical correlation."],
            ],
            title="MRI report",
        ),
        "X-ray_left_knee.png": make_png,
        "PT_notes_week1.txt": text(
            "Physical therapy notes - week 1 (2025-02-10 to 2025-02-14)\n"
            "Patient: Jane Doe\nSessions: 3\nPain 6/10 at start, 5/10 at end of week.\n"
            "Plan: continue cervical ROM exercises, knee strengthening.\n"
        ),
        "bill_St_Marys.xlsx": lambda: make_xlsx(
            [
                ["Date", "Provider", "Description", "CPT", "Amount"],
                ["2025-01-15", "St. Mary's Hospital", "ER visit, level 4", "99284", 1850.0],
                ["2025-01-15", "St. Mary's Hospital", "X-ray knee, 3 views", "73562", 420.5],
                ["2025-01-15", "St. Mary's Hospital", "CT head without contrast", "70450", 2310.0],
            ],
            sheet="Charges",
        ),
        "client_intake.txt": text(
            "Client intake - Jane Doe\nIncident: rear-ended at a red light, 2025-01-15, 5:40 pm.\n"
            "Other driver: insured by Acme Mutual, claim pending.\nInjuries: neck, left knee.\n"
        ),
        "expenses.csv": text(
            "date,category,description,amount\n2025-01-15,medical,ER copay,250.00\n"
            "2025-01-16,pharmacy,prescriptions,38.40\n2025-02-03,medical,MRI copay,150.00\n"
            "2025-02-10,travel,mileage to PT (42 mi),28.14\n"
        ),
        "Medical Records/CT_scan_head_2025-01-15.pdf": lambda: make_pdf(
            [
                [
                    "St. Mary's Hospital - CT Head without contrast",
                    "Date: 2025-01-15",
                    "Impression: no acute intracranial abnormality.",
                ],
            ],
            title="CT head",
        ),
        "Medical Records/PT_notes_week2.txt": text(
            "Physical therapy notes - week 2 (2025-02-17 to 2025-02-21)\nSessions: 3\nPain 4/10.\n"
        ),
        "Medical Records/invoice_Valley_Imaging.csv": text(
            "date,description,cpt,amount\n2025-02-03,MRI cervical spine w/o contrast,72141,1975.00\n"
        ),
        "Medical Records/records_request_2025-02-20.txt": text(
            "Records request sent to St. Mary's Hospital on 2025-02-20 (HIPAA authorization enclosed).\n"
        ),
        "Medical Records/Dr Smith/Dr_Smith_consult_2025-01-22.docx": lambda: make_docx(
            [
                "Orthopedic consultation - Dr. J. Smith",
                "Patient: Jane Doe   Date: 2025-01-22",
                "Findings: tenderness over the left patella; full range of motion.",
                "Plan: physical therapy twice weekly for six weeks; MRI of the cervical spine.",
            ]
        ),
        "Correspondence/2025/letter_to_insurer_2025-02-01.docx": lambda: make_docx(
            [
                "February 1, 2025",
                "Acme Mutual Insurance - Claims Department",
                "Re: Our client Jane Doe; date of loss January 15, 2025",
                "Please direct all further communication about this claim to our office.",
            ]
        ),
        "Correspondence/2025/insurer_acknowledgment_2025-02-07.txt": text(
            "Acme Mutual acknowledges receipt of your letter of representation dated 2025-02-01.\n"
        ),
        "Police Report/police_report_2025-01-15.pdf": lambda: make_pdf(
            [
                [
                    "City Police Department - Traffic Collision Report",
                    "Report no. 2025-00115   Date: 2025-01-15",
                    "Unit 1 (Doe) stopped at red signal; Unit 2 failed to stop and struck Unit 1 from behind.",
                ],
                ["Citation issued to driver of Unit 2: following too closely.", "Reporting officer: Badge 4471"],
            ],
            title="Police report",
        ),
        "Police Report/scene_photo_1.png": lambda: make_png(48, 32),
    }


def sample_tool_source(name: str) -> bytes:
    """The bytes of one of the sample Tools scripts shipped as package data."""
    if name not in SAMPLE_TOOLS:
        raise ValueError(f"unknown sample tool {name!r}; known: {', '.join(SAMPLE_TOOLS)}")
    return (files("scoperun") / "_sample" / "Tools" / name).read_bytes()


def _mkdir(root: Path, rel: Path, created: list[Path]) -> None:
    """Create root/rel folder by folder, recording what was created; refuse symlinks below root."""
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            # Writing through a symlink could land outside the workspace.
            raise WorkspaceError(
                f"{current} is a symlink; the sample workspace needs plain folders. Remove it or pick another root.",
                path=str(current),
            )
        if not current.exists():
            current.mkdir()
            created.append(current)
        elif not current.is_dir():
            raise WorkspaceError(
                f"{current} exists and is not a folder; move it away or pick another root.", path=str(current)
            )


def _write_new(path: Path, data: bytes, mode: int, created: list[Path]) -> None:
    """Write `path` only if nothing exists there (O_EXCL: never overwrites, never follows links)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask must not strip read bits the container relies on
    created.append(path)


def create_sample_workspace(
    root: Path,
    *,
    case_name: str = DEFAULT_CASE_NAME,
    owner: tuple[int, int] | None = (1000, 1000),
) -> Path:
    """Create (or complete) a sample workspace under `root`; return its case folder.

    Existing files are never overwritten or deleted. As root, what this creates under projects/
    and Database/ is chowned to `owner` (the container's user); Tools/ stays root's, read-only.
    """
    if not case_name or case_name in {".", ".."} or "/" in case_name or "\\" in case_name or "\0" in case_name:
        raise ScopeError(
            f"Invalid case name {case_name!r}: use one folder name without slashes.", rule="case_name", value=case_name
        )
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)

    owned: list[Path] = []  # created things the container's user must be able to write
    root_owned: list[Path] = []  # created things that stay root's (Tools)
    case_rel = Path("projects", case_name)
    case = root / case_rel
    _mkdir(root, case_rel, owned)
    for rel, make in _case_files().items():
        target = case / rel
        _mkdir(root, case_rel / rel.rpartition("/")[0], owned)
        if not target.exists() and not target.is_symlink():
            _write_new(target, make(), 0o644, owned)
    for sub in ("script_executions", "temp_scripts"):
        _mkdir(root, Path("Database", sub), owned)

    tools = root / "Tools"
    _mkdir(root, Path("Tools"), root_owned)
    for name in SAMPLE_TOOLS:
        _write_new(tools / name, sample_tool_source(name), 0o755 if name.endswith(".sh") else 0o644, root_owned)
    for d in root_owned:
        if d.is_dir():
            d.chmod(0o755)

    if owner is not None and os.geteuid() == 0:
        uid, gid = owner
        for path in owned:
            os.chown(path, uid, gid, follow_symlinks=False)
    return case
