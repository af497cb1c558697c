"""The public API: what `import scoperun` exports, and what it does not load."""

from __future__ import annotations

import subprocess
import sys
import types

import scoperun
from scoperun import errors


def test_every_exported_name_exists() -> None:
    """Each name in scoperun.__all__ is an attribute of the package, and the list has no duplicates."""
    assert len(scoperun.__all__) == len(set(scoperun.__all__))
    missing = [name for name in scoperun.__all__ if not hasattr(scoperun, name)]
    assert not missing


def test_all_equals_the_public_names() -> None:
    """scoperun.__all__ is exactly the package's public names (submodules aside), sorted, every error class included."""
    typing_helpers = {"annotations", "TYPE_CHECKING"}
    public = sorted(name for name in dir(scoperun)  # the package's __dir__ includes the lazily loaded names
                    if (not name.startswith("_") or name == "__version__") and name not in typing_helpers
                    and not isinstance(vars(scoperun).get(name), types.ModuleType))
    assert scoperun.__all__ == public
    assert set(errors.__all__) <= set(scoperun.__all__)
    error_classes = {name for name, value in vars(errors).items()
                     if isinstance(value, type) and issubclass(value, errors.ScopeRunError)}
    assert error_classes == set(errors.__all__)


def test_optional_integrations_load_lazily() -> None:
    """`import scoperun` loads neither docker nor langchain, mcp, prometheus_client or the browser module."""
    code = ("import sys, scoperun; heavy = {'docker', 'langchain_core', 'mcp', 'prometheus_client', "
            "'scoperun.browser', 'scoperun.tools'}; print(sorted(heavy & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
