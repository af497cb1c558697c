"""Redaction of secrets from every text that leaves a run (output, messages, file names, records).

A secret is caught as itself, as any run of 8+ of its characters (also across line breaks), and
in the encodings a script would use to smuggle it out: base64 (standard and URL-safe, at any
byte alignment), hex (lower and upper case) and URL-encoding. A secret printed in short pieces
split between stdout and stderr is caught by `for_streams`, which looks at both together.
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["Redactor", "redactor_for"]

M = TypeVar("M", bound=BaseModel)
_MIN_SECRET_LEN = 4  # shorter values would redact ordinary words
_FRAGMENT_LEN = 8  # any run of >= 8 characters of a secret is redacted
_PIECE_LEN = 4  # pieces this short count only when, together, they spell most of a secret
_PIECES_COVER = 0.6  # share of a secret that pieces in stdout and stderr together must spell


def encodings(value: str) -> list[str]:
    """The forms of `value` a script could print to get it past a plain search (stable parts only)."""
    raw = value.encode("utf-8")
    forms = {raw.hex(), raw.hex().upper(), urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            # Encoded after `shift` other bytes: drop the groups those bytes (or the next) share.
            text = encode(b"\0" * shift + raw).decode("ascii")
            whole = 4 * ((shift + len(raw)) // 3)
            forms.add(text[(4 if shift else 0):whole])
            if shift == 0:
                forms.add(text.rstrip("="))
    forms.discard(value)
    return [f for f in forms if len(f) >= _FRAGMENT_LEN]


class Redactor:
    """Replaces secret values, their encodings, and any fragment of 8+ characters of them, by `[REDACTED:NAME]`."""

    def __init__(self, secrets: Mapping[str, str], *, pieces: Iterable[tuple[str, str]] = ()) -> None:
        self._secrets = {n: v for n, v in secrets.items() if v and len(v) >= _MIN_SECRET_LEN}
        # Every literal to replace (longest first, so a whole secret wins over its encodings' parts).
        self._literals: list[tuple[str, str]] = sorted(
            {(form, name) for name, value in self._secrets.items() for form in (value, *encodings(value))}
            | set(pieces), key=lambda item: -len(item[0]))
        self._grams: dict[str, str] = {}
        for name, value in self._secrets.items():
            for form in (value, *encodings(value)):
                for i in range(len(form) - _FRAGMENT_LEN + 1):
                    self._grams.setdefault(form[i : i + _FRAGMENT_LEN], name)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def for_streams(self, *texts: str) -> Redactor:
        """A redactor that also removes short secret pieces spread over `texts` (stdout, stderr) together.

        Pieces of 4 to 7 characters are ordinary alone; when the pieces found in all the texts
        together spell most of one secret, every one of them is redacted.
        """
        if not self._secrets:
            return self
        extra: set[tuple[str, str]] = set()
        for name, value in self._secrets.items():
            if len(value) < _FRAGMENT_LEN:
                continue
            found: dict[str, list[int]] = {}
            for length in range(_PIECE_LEN, _FRAGMENT_LEN):
                for i in range(len(value) - length + 1):
                    piece = value[i : i + length]
                    if any(piece in t for t in texts):
                        found.setdefault(piece, []).append(i)
            covered: set[int] = set()
            for piece, starts in found.items():
                for i in starts:
                    covered.update(range(i, i + len(piece)))
            if len(covered) >= _PIECES_COVER * len(value):
                extra.update((piece, name) for piece in found)
        if not extra:
            return self
        return Redactor(self._secrets, pieces=extra)

    def redact(self, text: str) -> str:
        """Return `text` with every secret value and secret fragment replaced.

        Line breaks are ignored when looking for fragments, so a secret printed in pieces over
        several lines (even pieces shorter than 8 characters) is caught; the breaks are kept.
        """
        if not self._secrets or not text:
            return text
        for value, name in self._literals:
            if value in text:
                text = text.replace(value, f"[REDACTED:{name}]")
        if not self._grams:
            return text
        # Positions of the characters that are not line breaks: fragments are searched in the
        # text with the breaks removed, then mapped back.
        kept = [i for i, ch in enumerate(text) if ch not in "\r\n"]
        joined = "".join(text[i] for i in kept) if len(kept) != len(text) else text
        owner: list[str | None] = [None] * len(text)
        hit = False
        for i in range(len(joined) - _FRAGMENT_LEN + 1):
            found = self._grams.get(joined[i : i + _FRAGMENT_LEN])
            if found is not None:
                hit = True
                for j in range(i, i + _FRAGMENT_LEN):
                    owner[kept[j]] = found
        if not hit:
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            owned = owner[i]
            if owned is None:
                out.append(text[i])
                i += 1
                continue
            while i < len(text) and owner[i] == owned:
                i += 1
            out.append(f"[REDACTED:{owned}]")
        return "".join(out)

    def redact_data(self, data: Any) -> Any:
        """Redact every string inside nested dicts, lists and tuples (e.g. a result's JSON)."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {k: self.redact_data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return type(data)(self.redact_data(v) for v in data)
        return data

    def redact_model(self, model: M) -> M:
        """A copy of a flat model (e.g. a Hazard) with every string field redacted; itself when nothing is."""
        if not self._secrets:
            return model
        dumped = model.model_dump()
        redacted = self.redact_data(dumped)
        return model if redacted == dumped else type(model).model_validate(redacted)

    def redact_list(self, values: list[str]) -> list[str]:
        """Redact each string of a list."""
        return [self.redact(v) for v in values]

    def redact_changes(self, cs: Any) -> Any:
        """A copy of a ChangeSet whose names, link targets, notes and conflicts are redacted.

        A name that held a secret loses its exact bytes (`path_b64`): the copy is for people and
        agents; apply and rollback keep using the host's unredacted change set.
        """
        if cs is None or not self._secrets:
            return cs
        entries = []
        for c in cs.entries:
            update: dict[str, Any] = {}
            for key, b64 in (("path", "path_b64"), ("target", "target_b64"), ("target_before", None),
                             ("renamed_from", None), ("hardlink_to", None)):
                text = getattr(c, key)
                raw_b64 = getattr(c, b64) if b64 else None
                if text is None:
                    continue
                shown = self.redact(text)
                leaked_b64 = raw_b64 is not None and self.redact(raw_b64) != raw_b64
                if shown != text or leaked_b64:
                    update[key] = shown
                    if b64:
                        update[b64] = None
            entries.append(c.model_copy(update=update) if update else c)
        return cs.model_copy(update={"entries": entries, "note": self.redact(cs.note),
                                     "summary": self.redact(cs.summary),
                                     "conflicts": self.redact_list(cs.conflicts)})


def redactor_for(secret_env: Iterable[str], environ: Mapping[str, str] | None = None) -> Redactor:
    """The redactor for the passed-through secrets `secret_env` (e.g. `settings.secret_env`).

    Adapters that show anything to an agent (markdown, MCP, LangChain) use this so they redact
    exactly what runs redact.
    """
    env = os.environ if environ is None else environ
    return Redactor({name: env[name] for name in secret_env if env.get(name)})
