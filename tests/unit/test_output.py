"""Bounded output capture and secret redaction."""

from __future__ import annotations

from scoperun.engine.capture import BoundedBuffer
from scoperun.safety.redaction import Redactor


def test_small_output_is_kept_whole() -> None:
    """Output under the cap is kept byte for byte and not marked truncated."""
    buf = BoundedBuffer(1024)
    buf.write(b"hello ")
    buf.write(b"world\n")
    cap = buf.capture()
    assert cap.text == "hello world\n" and cap.total_bytes == 12 and not cap.truncated


def test_large_output_keeps_head_and_tail_and_counts_everything() -> None:
    """A flood keeps its head and tail within the cap and counts every byte."""
    buf = BoundedBuffer(4096)
    buf.write(b"HEAD")
    for _ in range(10_000):
        buf.write(b"." * 100)
    buf.write(b"TAIL")
    cap = buf.capture()
    assert cap.truncated and cap.total_bytes == 8 + 1_000_000
    assert cap.text.startswith("HEAD") and cap.text.endswith("TAIL")
    assert "bytes omitted by scoperun" in cap.text
    assert len(cap.text) < 4096 + 100


def test_invalid_utf8_and_nul_survive_decoding() -> None:
    """Invalid UTF-8 becomes replacement characters; NUL bytes do not break the capture."""
    buf = BoundedBuffer(1024)
    buf.write(b"ok \xff\xfe \x00 end")
    assert buf.capture().text == "ok \ufffd\ufffd \x00 end"


def test_redactor_replaces_whole_secrets_and_fragments() -> None:
    """A secret is redacted whole, and so is any 8+ character fragment of it (e.g. split output)."""
    secret = "sk-live-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    r = Redactor({"OPENAI_API_KEY": secret})
    assert r.redact(f"key={secret}!") == "key=[REDACTED:OPENAI_API_KEY]!"
    split = f"{secret[:15]}\n{secret[15:]}"
    redacted = r.redact(split)
    assert secret[:15] not in redacted and secret[15:] not in redacted
    assert redacted.count("[REDACTED:OPENAI_API_KEY]") == 2
    assert r.redact("nothing secret here") == "nothing secret here"


def test_redactor_ignores_empty_and_tiny_values() -> None:
    """Empty or very short values are not treated as secrets (they would redact ordinary text)."""
    r = Redactor({"A": "", "B": "ab"})
    assert not r
    assert r.redact("ab cd") == "ab cd"
