"""Secret redaction beyond whole values: fragments, pieces split over lines, nested data."""

from __future__ import annotations

from scoperun.safety.redaction import Redactor, redactor_for

SECRET = "sk-live-4f9a2c7e1b3d8f60"


def test_secret_split_over_lines_in_short_pieces_is_redacted() -> None:
    """Pieces shorter than 8 characters on consecutive lines are still recognised and replaced."""
    text = "key:\n" + "\n".join(SECRET[i:i + 4] for i in range(0, len(SECRET), 4)) + "\ndone"
    out = Redactor({"OPENAI_API_KEY": SECRET}).redact(text)
    assert "[REDACTED:OPENAI_API_KEY]" in out
    assert not any(SECRET[i:i + 4] in out for i in range(0, len(SECRET), 4))
    assert out.startswith("key:\n") and out.endswith("\ndone")


def test_crlf_split_and_eight_char_substring_are_redacted() -> None:
    """A CRLF-split secret and any 8-character substring of it are replaced."""
    r = Redactor({"K": SECRET})
    assert SECRET[3:11] not in r.redact(f"x {SECRET[3:11]} y")
    out = r.redact(SECRET[:9] + "\r\n" + SECRET[9:])
    assert SECRET[:9] not in out and SECRET[9:] not in out


def test_unrelated_text_and_short_overlaps_are_kept() -> None:
    """Text sharing fewer than 8 consecutive characters with a secret is left as it was."""
    r = Redactor({"K": SECRET})
    assert r.redact("sk-live is a prefix\nand 4f9a2c7 too") == "sk-live is a prefix\nand 4f9a2c7 too"


def test_redact_data_walks_nested_structures_and_redactor_for_reads_env() -> None:
    """redactor_for builds the redactor from secret names; redact_data reaches strings in dicts and lists."""
    r = redactor_for(["K", "UNSET"], {"K": SECRET})
    data = r.redact_data({"a": [f"v={SECRET}", 3], "b": {"c": (SECRET[:10],)}})
    assert data == {"a": ["v=[REDACTED:K]", 3], "b": {"c": ("[REDACTED:K]",)}}
