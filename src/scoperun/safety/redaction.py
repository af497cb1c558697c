"""Redaction of secrets from every text that leaves a run (output, messages, records)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Redactor", "redactor_for"]

_MIN_SECRET_LEN = 4  # shorter values would redact ordinary words
_FRAGMENT_LEN = 8  # any run of >= 8 characters of a secret is redacted


class Redactor:
    """Replaces secret values, and any fragment of 8+ characters of them, by `[REDACTED:NAME]`."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = {n: v for n, v in secrets.items() if v and len(v) >= _MIN_SECRET_LEN}
        self._grams: dict[str, str] = {}
        for name, value in self._secrets.items():
            for i in range(len(value) - _FRAGMENT_LEN + 1):
                self._grams.setdefault(value[i : i + _FRAGMENT_LEN], name)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def redact(self, text: str) -> str:
        """Return `text` with every secret value and secret fragment replaced.

        Line breaks are ignored when looking for fragments, so a secret printed in pieces over
        several lines (even pieces shorter than 8 characters) is caught; the breaks are kept.
        """
        if not self._secrets or not text:
            return text
        for secret_name, value in self._secrets.items():
            text = text.replace(value, f"[REDACTED:{secret_name}]")
        if not self._grams:
            return text
        # Positions of the characters that are not line breaks: fragments are searched in the
        # text with the breaks removed, then mapped back.
        kept = [i for i, ch in enumerate(text) if ch not in "\r\n"]
        joined = "".join(text[i] for i in kept) if len(kept) != len(text) else text
        owner: list[str | None] = [None] * len(text)
        hit = False
        for i in range(len(joined) - _FRAGMENT_LEN + 1):
            name = self._grams.get(joined[i : i + _FRAGMENT_LEN])
            if name is not None:
                hit = True
                for j in range(i, i + _FRAGMENT_LEN):
                    owner[kept[j]] = name
        if not hit:
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            name = owner[i]
            if name is None:
                out.append(text[i])
                i += 1
                continue
            while i < len(text) and owner[i] == name:
                i += 1
            out.append(f"[REDACTED:{name}]")
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

    def redact_list(self, values: list[str]) -> list[str]:
        """Redact each string of a list."""
        return [self.redact(v) for v in values]


def redactor_for(secret_env: Iterable[str], environ: Mapping[str, str] | None = None) -> Redactor:
    """The redactor for the passed-through secrets `secret_env` (e.g. `settings.secret_env`).

    Adapters that show anything to an agent (markdown, MCP, LangChain) use this so they redact
    exactly what runs redact.
    """
    env = os.environ if environ is None else environ
    return Redactor({name: env[name] for name in secret_env if env.get(name)})
