"""The one atomic file writer: a fresh temporary file beside the target, fsync, rename.

A reader sees the old file or the new one, never half of either; a crash leaves at most a
`.name.<hex>.tmp` file behind, never a truncated target.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = ["write_bytes_atomic", "write_json_atomic"]


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` through an exclusive temporary file (never a symlink), fsync and rename."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write JSON (data, or a pydantic model) to `path` atomically (see `write_bytes_atomic`)."""
    # A model serialises in pydantic's core: tens of thousands of change entries in well under a second.
    body = data.model_dump_json().encode() if isinstance(data, BaseModel) else \
        json.dumps(data, indent=1, ensure_ascii=True, default=str).encode("ascii")
    write_bytes_atomic(path, body, mode)
