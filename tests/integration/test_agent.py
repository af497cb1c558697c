"""The LangGraph agent end to end on the real engine: a scripted model's tool calls run real containers."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from scoperun import Executor, Settings
from scoperun.sample import DEFAULT_CASE_NAME, create_sample_workspace
from scoperun.tools.testing import ScriptedChatModel, tool_call
from tests.integration.conftest import leftover_containers, read_record

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_SCRIPT = """
import json
inventory = json.load(open('inventory.json'))
with open('summary.txt', 'w') as fh:
    fh.write(f"{inventory['file_count']} files, {inventory['total_size']} bytes\\n")
print('summary:', inventory['file_count'], 'files')
"""


def load_example():
    """The example agent module, loaded from examples/paralegal_agent.py."""
    spec = importlib.util.spec_from_file_location("paralegal_agent", ROOT / "examples" / "paralegal_agent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report(messages: list[BaseMessage]) -> AIMessage:
    """The scripted model's final answer: what each tool call reported, as a real model would summarise it."""
    lines = []
    for m in messages:
        if isinstance(m, ToolMessage) and m.name == "list_cases":
            lines.append("- list_cases: " + ", ".join(re.findall(r"^\| ([^|]+?) \| \d", m.content, re.MULTILINE)))
        elif isinstance(m, ToolMessage) and m.name == "read_document":
            impression = re.search(r"^Impression: .*$", m.content, re.MULTILINE)
            lines.append(f"- read_document: {impression.group(0) if impression else 'no impression found'}")
        elif isinstance(m, ToolMessage):
            status = re.search(r"^Status: (.*)$", m.content, re.MULTILINE)
            eid = re.search(r"\*\*Script Execution: (exec_\w+)\*\*", m.content)
            summary = re.search(r"^summary: .*$", m.content, re.MULTILINE)
            lines.append(f"- {m.name}: {status.group(1) if status else 'see statistics'}"
                         f"{' (' + eid.group(1) + ')' if eid else ''}{'; ' + summary.group(0) if summary else ''}")
    return AIMessage(content="Report:\n" + "\n".join(lines))


def test_paralegal_agent_runs_tools_in_real_containers(executor: Executor, workspace: Path) -> None:
    """The example agent finds the case, reads a PDF, runs real containers that change the case, and reports it."""
    case_dir = create_sample_workspace(workspace)
    model = ScriptedChatModel(responses=[
        tool_call("list_cases", prefix="sample"),
        tool_call("read_document", case_name=DEFAULT_CASE_NAME, path="MRI_report.pdf"),
        tool_call("execute_script_on_filesystem", script_name="create_file_inventory.py", case_name=DEFAULT_CASE_NAME,
                  script_args=["--format", "json", "--output", "inventory.json"]),
        tool_call("execute_custom_script", script_content=SUMMARY_SCRIPT, case_name=DEFAULT_CASE_NAME,
                  script_name="summarise_inventory.py"),
        tool_call("execute_custom_script", script_content="open('missing.txt').read()\n", case_name=DEFAULT_CASE_NAME),
        tool_call("monitor_script_executions"),
        report,
    ])
    example = load_example()
    agent = example.build_agent(executor, model)
    final = asyncio.run(example.ask(agent, "Inventory the sample case and summarise it.", thread_id="case-7"))

    inventory = json.loads((case_dir / "inventory.json").read_text())
    expected = f"{inventory['file_count']} files, {inventory['total_size']} bytes\n"
    assert (case_dir / "summary.txt").read_text() == expected
    assert model.bound_tool_names[:5] == ["execute_script_on_filesystem", "execute_custom_script",
                                          "monitor_script_executions", "list_cases", "list_files"]
    assert "read_document" in model.bound_tool_names
    # It found the case by a prefix and read the MRI report's text (parsed in a container, audited).
    assert f"- list_cases: {DEFAULT_CASE_NAME}" in final
    assert "- read_document: Impression: mild C5-C6 disc bulge without cord compression." in final
    from scoperun.files import read_access_events

    reads = [e for e in read_access_events(executor.settings, workspace.resolve()) if e["event"] == "files.read_document"]
    assert [(e["path"], e["by"]) for e in reads] == [("MRI_report.pdf", "paralegal-agent/thread-case-7")]
    ids = re.findall(r"\((exec_\w+)\)", final)
    assert len(ids) == 3
    records = [read_record(workspace, eid) for eid in ids]
    assert [r["status"] for r in records] == ["succeeded", "succeeded", "failed"]
    assert {r["requested_by"] for r in records} == {"paralegal-agent/thread-case-7"}
    assert f"execute_custom_script: ✅ Success ({ids[1]}); summary: {inventory['file_count']} files" in final
    assert f"execute_custom_script: ❌ Failed ({ids[2]})" in final
    assert "monitor_script_executions: see statistics" in final
    # The agent's custom scripts were really written, each under its own name.
    written = sorted(p.name for p in (workspace / "Database" / "temp_scripts").iterdir())
    assert written == sorted([f"{ids[1]}_summarise_inventory.py", f"{ids[2]}_temp_script.py"])


def langgraph_snippet() -> str:
    """The LangGraph code block of docs/agents.md (the one marked as run by this test)."""
    doc = (ROOT / "docs" / "agents.md").read_text()
    marker = doc.index("<!-- langgraph-snippet:")
    match = re.compile(r"```python\n(.*?)```", re.DOTALL).search(doc, marker)
    assert match, "docs/agents.md lost its LangGraph snippet"
    return match.group(1)


def test_docs_langgraph_snippet_runs(settings: Settings, workspace: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str], docker_client) -> None:
    """The LangGraph snippet of docs/agents.md runs as written (with a scripted model) and prints the report."""
    import langchain.chat_models

    case_dir = create_sample_workspace(workspace)
    model = ScriptedChatModel(responses=[
        tool_call("execute_script_on_filesystem", script_name="create_file_inventory.py", case_name=DEFAULT_CASE_NAME,
                  script_args=["--format", "json", "--output", "inventory.json"]),
        lambda messages: AIMessage(content="Inventory done:\n" + messages[-1].content),
    ])
    monkeypatch.setattr(langchain.chat_models, "init_chat_model", lambda *a, **k: model)
    for name, value in {"WORKSPACE": str(workspace), "IMAGE": settings.image, "NETWORK": "none",
                        "TIMEOUT": "60"}.items():
        monkeypatch.setenv(f"SCOPERUN_{name}", value)
    exec(compile(langgraph_snippet(), "docs/agents.md", "exec"), {"__name__": "docs_snippet"})
    printed = capsys.readouterr().out
    assert printed.startswith("Inventory done:\n**Script Execution: exec_") and "Status: ✅ Success" in printed
    assert json.loads((case_dir / "inventory.json").read_text())["file_count"] > 0
    eid = re.search(r"Script Execution: (exec_\w+)", printed).group(1)
    assert read_record(workspace, eid)["requested_by"] == "langchain/thread-intake-42"
    assert leftover_containers(docker_client, {eid}) == []
