"""Live output: raw chunks from the engine become redacted text, a whole line at a time.

A secret is redacted only when the redactor sees it whole, so text is handed on at line ends
(or when a line grows past `max_line`, or at the end of the run), never mid-line.
"""

from __future__ import annotations

import codecs
import logging
import threading
from collections.abc import Callable
from typing import Any

from scoperun.safety.redaction import Redactor

__all__ = ["LiveOutput", "OutputCallback"]

OutputCallback = Callable[[str, str], None]  # (stream, text): "stdout" | "stderr", redacted
log = logging.getLogger(__name__)


class LiveOutput:
    """Feeds `callback(stream, text)` with redacted whole lines as a run prints them."""

    def __init__(self, callback: OutputCallback, redactor: Redactor, *, max_line: int = 64 * 1024) -> None:
        self.callback = callback
        self.redactor = redactor
        self.max_line = max_line
        self._lock = threading.Lock()
        self._decoders: dict[str, Any] = {}
        self._carry: dict[str, str] = {"stdout": "", "stderr": ""}

    def feed(self, stream: str, data: bytes) -> None:
        """Take a raw chunk of `stream`; hand on the complete lines it finishes."""
        with self._lock:
            decoder = self._decoders.setdefault(stream, codecs.getincrementaldecoder("utf-8")("replace"))
            text = self._carry.get(stream, "") + decoder.decode(data)
            cut = text.rfind("\n") + 1
            if cut == 0 and len(text) >= self.max_line:
                cut = len(text)
            self._carry[stream] = text[cut:]
            ready = text[:cut]
        if ready:
            self._emit(stream, ready)

    def flush(self) -> None:
        """The run ended: hand on what is left of unfinished lines."""
        with self._lock:
            left = {}
            for stream, decoder in self._decoders.items():
                left[stream] = self._carry.get(stream, "") + decoder.decode(b"", final=True)
                self._carry[stream] = ""
        for stream, text in left.items():
            if text:
                self._emit(stream, text)

    def _emit(self, stream: str, text: str) -> None:
        try:
            self.callback(stream, self.redactor.redact(text))
        except Exception:  # a caller's callback must not break the run's output capture
            log.warning("on_output callback failed; live output continues", exc_info=True)
