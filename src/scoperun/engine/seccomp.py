"""The seccomp profile runs get: scoperun's own (shipped beside this module), the engine's, or a file."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from scoperun.errors import ConfigError

__all__ = ["SHIPPED", "profile_json"]

SHIPPED = Path(__file__).with_name("seccomp.json")


@lru_cache(maxsize=8)
def profile_json(setting: str) -> str | None:
    """The profile text to hand the engine for the `seccomp` setting; None = the engine's default.

    `scoperun`: the shipped profile (io_uring, namespaces, mounts, keyring, ptrace, bpf, ... refused);
    `engine`: the engine's own default; anything else: the path of a JSON profile.
    """
    if setting == "engine":
        return None
    path = SHIPPED if setting == "scoperun" else Path(setting).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"seccomp profile {path} cannot be used ({exc}); set seccomp to scoperun, engine or "
                          f"the path of a JSON profile") from None
    return text
