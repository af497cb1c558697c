"""Every code snippet in README.md and docs/*.md runs against the sample workspace on the real engine
(python blocks run, shell lines calling scoperun run, JSON parses); a block that cannot run here says
why in a `<!-- not run by tests: REASON -->` comment just above it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import IMAGE

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
SKIP = re.compile(r"<!-- not run by tests: (.+?) -->\s*$")
ANY_ID = re.compile(r"\bexec_\d{8}_\d{6}_[0-9a-f]{8}\b|\bEXEC_ID\b")
USAGE_ERRORS = ("No such option", "No such command", "Missing argument", "Got unexpected extra argument",
                "Invalid value", "Traceback")
SERVERS = ("scoperun metrics", "scoperun serve", "scoperun mcp")


def snippets() -> list[tuple[str, str, str, str | None]]:
    """(where, language, code, reason it is not run) for every fenced block of the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            skip = SKIP.search(before)
            line = text[: m.start()].count("\n") + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}", m.group(1), m.group(2), skip.group(1) if skip else None))
    return found


def _logical_lines(code: str) -> list[str]:
    lines, current = [], ""
    for raw in code.splitlines():
        current += raw.rstrip("\\").rstrip() + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                lines.append(current.strip())
            current = ""
    return lines


def _strip_comment(line: str) -> str:
    # A comment starts at a `#` after whitespace outside quotes.
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).strip()


@pytest.fixture(scope="module")
def sample(tmp_path_factory, docker_client):
    """The sample workspace with one finished run; a folder to run snippets in; their environment."""
    from scoperun.sample import create_sample_workspace

    base = tmp_path_factory.mktemp("snippets")
    workspace = base / "workspace"
    create_sample_workspace(workspace)
    env = {**os.environ, "SCOPERUN_WORKSPACE": str(workspace), "SCOPERUN_IMAGE": IMAGE,
           "SCOPERUN_NETWORK": "none", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("SCOPERUN_URL", None)
    proc = subprocess.run([sys.executable, "-m", "scoperun", "run", "--json", "Tools/create_file_inventory.py",
                           "--case", "Sample-Client-MVA-1-15-2025", "--", "--format", "md", "--output",
                           "inventory_for_snippets.md"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {"cwd": base, "env": env, "id": json.loads(proc.stdout)["execution_id"]}


def test_every_block_runs_or_says_why_not() -> None:
    """Each block is a language the tests run (python, bash, json) or plain text, or carries a reason."""
    for where, lang, code, reason in snippets():
        if reason is not None:
            assert len(reason) > 10, f"{where}: give a real reason"
            continue
        assert lang in ("python", "bash", "sh", "json", "", "text"), f"{where}: language {lang!r} is not run"
        if lang in ("bash", "sh"):
            for line in _logical_lines(code):
                cmd = _strip_comment(line)
                assert not cmd or "scoperun " in f"{cmd} ", (
                    f"{where}: `{cmd}` is not a scoperun command; run it in a test or mark the block "
                    f"`<!-- not run by tests: REASON -->`")


@pytest.mark.parametrize("where,lang,code", [(w, lang, c) for w, lang, c, r in snippets()
                                             if r is None and lang in ("python", "bash", "sh", "json")],
                         ids=lambda v: v if isinstance(v, str) and ":" in v else "")
def test_snippet(where: str, lang: str, code: str, sample) -> None:
    """The snippet runs: python exits 0; scoperun lines parse and run without a usage error; JSON parses."""
    if lang == "json":
        json.loads(code)
        return
    if lang == "python":
        script = sample["cwd"] / "snippet.py"
        script.write_text(ANY_ID.sub(sample["id"], code))
        proc = subprocess.run([sys.executable, str(script)], cwd=sample["cwd"], env=sample["env"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{where}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return
    for line in _logical_lines(code):
        cmd = ANY_ID.sub(sample["id"], _strip_comment(line))
        if not cmd:
            continue
        if cmd.startswith(SERVERS):
            cmd += " --help"  # the options must exist; the server itself is tested elsewhere
        if cmd.startswith("scoperun image build"):
            cmd += " --dry-run"  # never rebuild the shared images from a docs test
        proc = subprocess.run(["bash", "-c", cmd], cwd=sample["cwd"], env=sample["env"], capture_output=True,
                              text=True, timeout=600)
        output = proc.stdout + proc.stderr
        for words in USAGE_ERRORS:
            assert words not in output, f"{where}: `{shlex.quote(cmd)}` -> {words}:\n{output[-3000:]}"
        assert proc.returncode != 125, f"{where}: `{cmd}` hit an engine error:\n{output[-3000:]}"
