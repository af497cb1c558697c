"""The one atomic file writer: a fresh temporary file beside the target, fsync, rename.

A reader sees the old file or the new one, never half of either; a crash leaves at most a
`.name.<hex>.tmp` file behind, never a truncated target.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["write_bytes_atomic", "write_json_atomic"]


def write_bytes_atomic(path: Path, data: bytes | Iterable[bytes], mode: int = 0o600, *,
                       in_place: bool = False, durable: bool = True) -> None:
    """Write `data` (bytes or chunks) to `path` through an exclusive temporary file (never a symlink), fsync, rename.

    `in_place`: write `path` itself (still never through a symlink), for a bucket behind FUSE, which
    replaces an object whole when the file is closed; a rename there is a copy and a delete.
    `durable=False` skips the fsync, for a file whose loss in a crash costs nothing (readers still
    see the old file or the new one, never half of either, while the machine runs).
    """
    path = Path(path)
    tmp = path if in_place else path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_TRUNC if in_place else os.O_EXCL
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in [data] if isinstance(data, bytes) else data:
                fh.write(chunk)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if not in_place:
            os.replace(tmp, path)
    except BaseException:
        if not in_place:
            tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write JSON (data, or a pydantic model) to `path` atomically (see `write_bytes_atomic`)."""
    from pydantic import BaseModel  # here, not at import: the command line's fast paths write without it

    # A model serialises in pydantic's core: tens of thousands of change entries in well under a second.
    body = data.model_dump_json().encode() if isinstance(data, BaseModel) else \
        json.dumps(data, indent=1, ensure_ascii=True, default=str).encode("ascii")
    write_bytes_atomic(path, body, mode, durable=durable)
