"""scoperun: run scripts on a firm's real case files in fresh, hardened, scoped containers.

    from scoperun import Executor
    from scoperun import ExecutionRequest
    result = Executor().run(ExecutionRequest(script="Tools/create_file_inventory.py", case="Doe-MVA-2024"))

    CaseFiles().read_document("Doe-MVA-2024", "MRI_report.pdf")   # cases and files, scoped and audited

Importing scoperun never contacts a container engine; the engine client is made on first run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scoperun.errors import (
    AuditError,
    ConfigError,
    EngineError,
    FileAccessError,
    ImageError,
    SafetyError,
    ScopeError,
    ScopeRunError,
    ServiceError,
    UnsupportedScriptError,
    WorkspaceError,
)

if TYPE_CHECKING:
    from scoperun.config import Settings, load_settings
    from scoperun.executor import Executor
    from scoperun.files import CaseFiles
    from scoperun.models import (
        Durations,
        ExecutionRequest,
        ExecutionResult,
        Limits,
        OutputCapture,
        RunEvent,
        Status,
    )

# Loaded on first use (PEP 562), so `scoperun --help` and `scoperun version` import no pydantic.
_LAZY = {
    "Settings": "scoperun.config", "load_settings": "scoperun.config", "Executor": "scoperun.executor",
    "CaseFiles": "scoperun.files", "Durations": "scoperun.models", "ExecutionRequest": "scoperun.models",
    "ExecutionResult": "scoperun.models", "Limits": "scoperun.models", "OutputCapture": "scoperun.models",
    "RunEvent": "scoperun.models", "Status": "scoperun.models",
    "Client": "scoperun.client",  # needs httpx (the service extra)
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'scoperun' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"


__all__ = [
    "AuditError",
    "CaseFiles",
    "Client",
    "ConfigError",
    "Durations",
    "EngineError",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "FileAccessError",
    "ImageError",
    "Limits",
    "OutputCapture",
    "SafetyError",
    "ScopeError",
    "RunEvent",
    "ScopeRunError",
    "ServiceError",
    "Settings",
    "Status",
    "UnsupportedScriptError",
    "WorkspaceError",
    "__version__",
    "load_settings",
]
