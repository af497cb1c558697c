"""The throw-away workspace `serve.py` and `cli.py` run `print(1)` in: one case, read-only runs, no network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def bench_workspace(image: str, prefix: str) -> tuple[Path, dict[str, str]]:
    """A new workspace with the case Bench-Case, and the environment (no inherited SCOPERUN_*) that uses it."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / "projects" / "Bench-Case").mkdir(parents=True)
    (root / "Tools").mkdir()
    (root / "Database" / "temp_scripts").mkdir(parents=True)
    if os.geteuid() == 0:
        for path in (root / "projects" / "Bench-Case", root / "Database" / "temp_scripts"):
            os.chown(path, 1000, 1000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOPERUN_")}
    env.update({"SCOPERUN_WORKSPACE": str(root), "SCOPERUN_IMAGE": image, "SCOPERUN_NETWORK": "none",
                "SCOPERUN_STATE_DIR": str(root / ".state"), "SCOPERUN_WRITE_MODE": "read-only"})
    return root, env
