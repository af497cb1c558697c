"""scoperun: run scripts on a firm's real case files in fresh, hardened, scoped containers.

    from scoperun import Executor
    from scoperun import ExecutionRequest
    result = Executor().run(ExecutionRequest(script="Tools/create_file_inventory.py", case="Doe-MVA-2024"))

    CaseFiles().read_document("Doe-MVA-2024", "MRI_report.pdf")   # cases and files, scoped and audited

Importing scoperun never contacts a container engine; the engine client is made on first run.
"""

from __future__ import annotations

from scoperun.config import Settings, load_settings
from scoperun.errors import (
    AuditError,
    ConfigError,
    EngineError,
    FileAccessError,
    ImageError,
    SafetyError,
    ScopeError,
    ScopeRunError,
    UnsupportedScriptError,
    WorkspaceError,
)
from scoperun.executor import Executor
from scoperun.files import CaseFiles
from scoperun.models import Durations, ExecutionRequest, ExecutionResult, Limits, OutputCapture, Status

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "CaseFiles",
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
    "ScopeRunError",
    "Settings",
    "Status",
    "UnsupportedScriptError",
    "WorkspaceError",
    "__version__",
    "load_settings",
]
