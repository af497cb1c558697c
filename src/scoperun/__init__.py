"""scoperun: run scripts on a firm's real case files in fresh, hardened, scoped containers.

    from scoperun import Executor
    from scoperun import ExecutionRequest
    result = Executor().run(ExecutionRequest(script="Tools/create_file_inventory.py", case="Doe-MVA-2024"))

Importing scoperun never contacts a container engine; the engine client is made on first run.
"""

from scoperun.config import Settings, load_settings
from scoperun.errors import (
    AuditError,
    BrowserActionError,
    ChangedSinceError,
    ChangesError,
    ConfigError,
    EngineError,
    FirewallError,
    ImageError,
    SafetyError,
    ScopeError,
    ScopeRunError,
    UnsupportedScriptError,
    WorkspaceError,
)
from scoperun.executor import Executor
from scoperun.models import Durations, ExecutionRequest, ExecutionResult, Limits, OutputCapture, Status

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "BrowserActionError",
    "ChangedSinceError",
    "ChangesError",
    "ConfigError",
    "Durations",
    "EngineError",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "FirewallError",
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
