"""Host-side walks and removal of hostile trees: descriptors, no recursion, no symlink followed."""

from __future__ import annotations

import os
from pathlib import Path

from scoperun.cli.common import plain, safe
from scoperun.fswalk import WalkReport, remove_tree, walk
from scoperun.safety.hazards import scan_case
from scoperun.safety.redaction import Redactor


def _deep(root: Path, levels: int, name: bytes = b"d") -> None:
    fd = os.open(root, os.O_RDONLY)
    for _ in range(levels):
        os.mkdir(name, dir_fd=fd)
        nxt = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(os.open(b"bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)


def test_walk_goes_past_path_max_and_reports_what_is_too_deep(tmp_path: Path) -> None:
    """A tree 40 x 200-byte names deep is walked whole; one deeper than max_depth is reported, not entered."""
    _deep(tmp_path / "", 40, b"n" * 200)
    report = WalkReport()
    entries = list(walk(tmp_path, report))
    assert report.complete and any(e.name == b"bottom" and len(e.rel) > 8000 for e in entries)
    capped = WalkReport()
    list(walk(tmp_path, capped, max_depth=10))
    assert not capped.complete and "deeper than 10 levels" in capped.problems[0][1]
    remove_tree(tmp_path / ("n" * 200))
    assert os.listdir(tmp_path) == []


def test_remove_tree_handles_thousands_of_levels_and_never_follows_links(tmp_path: Path) -> None:
    """3,000 nested folders are removed without RecursionError; a symlink inside is removed, its target kept."""
    (tmp_path / "t").mkdir()
    _deep(tmp_path / "t", 3000)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (tmp_path / "t" / "link").symlink_to(outside)
    remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists() and outside.read_text() == "keep"


def test_hazard_scan_reports_and_skips_what_it_cannot_examine(tmp_path: Path) -> None:
    """A link through /proc/1/root and a loop are reported; the setuid file after them is still defused."""
    os.symlink("/proc/1/root/etc/shadow", tmp_path / "a")
    os.symlink("loop", tmp_path / "loop")
    (tmp_path / "z").write_text("x")
    os.chmod(tmp_path / "z", 0o4755)
    _deep(tmp_path, 1005)
    report = scan_case(tmp_path, changed={b"z"})
    kinds = {(h.kind, h.path[:5]) for h in report.hazards}
    assert ("symlink-outside", "a") in kinds and ("setuid", "z") in kinds and ("unscanned", "d/d/d") in kinds
    assert [h.introduced for h in report.hazards if h.path == "z"] == [True]
    assert [h.introduced for h in report.hazards if h.path == "a"] == [False]
    assert not os.stat(tmp_path / "z").st_mode & 0o4000
    remove_tree(tmp_path / "d")


def test_redaction_catches_encodings_and_pieces_split_over_two_streams() -> None:
    """base64 (any alignment), hex, URL-encoding and 5-character pieces split over stdout/stderr are redacted."""
    import base64
    import urllib.parse

    key = "sk-live-9fQ2mZx81LkP0wRtY"
    r = Redactor({"KEY": key})
    for text in (base64.b64encode(key.encode()).decode(), base64.b64encode(b"ab" + key.encode()).decode(),
                 base64.urlsafe_b64encode(b"a" + key.encode()).decode(), key.encode().hex().upper(),
                 urllib.parse.quote("x=" + key)):
        assert "[REDACTED:KEY]" in r.redact(text), text
    chunks = [key[i:i + 5] for i in range(0, len(key), 5)]
    out, err = " ".join(chunks[0::2]), " ".join(chunks[1::2])
    joint = r.for_streams(out, err)
    assert not any(c in joint.redact(out) + joint.redact(err) for c in chunks)
    assert r.for_streams("an ordinary line", "sk-l and 9fQ2") is r or "ordinary" in r.redact("an ordinary line")


def test_human_views_escape_controls_newlines_and_bidi() -> None:
    """ESC, BEL, newlines and bidi overrides are shown escaped; lines=True keeps line breaks of output."""
    assert plain("a\x1b[2Kb\nc\u202ed") == "a\\x1b[2Kb\\nc\\u202ed"
    assert plain("l1\nl2\x07", lines=True) == "l1\nl2\\x07"
    assert safe("[red]x") == "\\[red]x"
