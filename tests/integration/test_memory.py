"""scoperun's own memory stays bounded while a script floods its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import CASE
from tests.integration.conftest import IMAGE

PROBE = """
import resource, sys
from scoperun import Executor
from scoperun import ExecutionRequest
from scoperun import Settings
ex = Executor(Settings(workspace=sys.argv[1], image=sys.argv[2], network="none", timeout=120))
warm = ex.run(ExecutionRequest(script="Tools/hello.py", case=sys.argv[3]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = ex.run(ExecutionRequest(script="Tools/flood.py", case=sys.argv[3]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ex.close()
print(result.status.value, result.stdout.total_bytes, after - before)
"""


def test_300_mb_flood_keeps_scoperun_memory_bounded(workspace: Path, docker_client) -> None:
    """Reading 300 MB of stdout grows scoperun's peak memory by only a few MB over the cap."""
    (workspace / "Tools" / "flood.py").write_text(
        "import sys\nblock = b'y' * (1024 * 1024)\nfor _ in range(300):\n    sys.stdout.buffer.write(block)\n"
    )
    proc = subprocess.run([sys.executable, "-c", PROBE, str(workspace), IMAGE, CASE],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    status, total, grown_kib = proc.stdout.split()
    assert status == "succeeded"
    assert int(total) == 300 * 1024 * 1024
    assert int(grown_kib) < 16 * 1024, f"peak RSS grew by {grown_kib} KiB"
