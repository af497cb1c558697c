"""A LangGraph paralegal agent that works on real case files through scoperun's tools.

    pip install 'scoperun[langchain]' langchain-openai      # or the package of your provider
    export SCOPERUN_WORKSPACE=./workspace                    # `scoperun demo` makes a sample one
    export SCOPERUN_AGENT_MODEL=openai:gpt-4o-mini OPENAI_API_KEY=...
    python examples/paralegal_agent.py "Make a JSON inventory of case Sample-Client-MVA-1-15-2025"

SCOPERUN_AGENT_MODEL is any "provider:model" LangChain's `init_chat_model` knows (anthropic:...,
google_genai:..., ollama:...). The agent is LangChain's prebuilt ReAct agent (`create_agent`, the
LangGraph graph that replaced `langgraph.prebuilt.create_react_agent`); every script it runs goes
through scoperun: a fresh container that sees one case, a timeout, an audit record.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel

from scoperun import Executor
from scoperun.tools.langchain import make_tools

SYSTEM_PROMPT = """You are a paralegal assistant for a personal-injury law firm.
You work on case folders (under projects/) with these tools:
- list_cases finds cases (use it first when you are not sure of a case's exact name);
- list_files, read_file, read_document (PDF, Word, Excel) and search_files look inside one case;
- write_file saves a text file into a case (staged: a person can review or undo it);
- execute_script_on_filesystem runs one of the firm's scripts from Tools/ on one case;
- execute_custom_script runs Python you write on one case (its working directory is the case folder);
- monitor_script_executions shows recent runs and statistics.
Every run happens in an isolated container that sees only the case you name. Read documents with
read_document rather than a script. Prefer the firm's Tools/ scripts; write your own code only when
no tool fits. Read each tool's result: if a run
failed, timed out or was rejected, say so plainly and do not claim it worked. Finish with a short
report of what you did, what changed in the case, and the execution ids."""


def chat_model_from_env() -> BaseChatModel:
    """The chat model named by SCOPERUN_AGENT_MODEL ("provider:model"), via `init_chat_model`."""
    from langchain.chat_models import init_chat_model

    name = os.environ.get("SCOPERUN_AGENT_MODEL")
    if not name:
        raise SystemExit("Set SCOPERUN_AGENT_MODEL, e.g. SCOPERUN_AGENT_MODEL=openai:gpt-4o-mini "
                         "(and the provider's API key, e.g. OPENAI_API_KEY).")
    return init_chat_model(name, temperature=0)


def build_agent(executor: Executor, model: BaseChatModel | None = None) -> Any:
    """The ReAct agent with scoperun's tools; `model` defaults to the one configured by env vars."""
    return create_agent(model or chat_model_from_env(), make_tools(executor, requested_by="paralegal-agent"),
                        system_prompt=SYSTEM_PROMPT)


async def ask(agent: Any, request: str, *, thread_id: str | None = None) -> str:
    """Send one request to the agent and return its final message (the audit records name the thread)."""
    config = {"configurable": {"thread_id": thread_id or uuid.uuid4().hex[:12]}, "recursion_limit": 40}
    state = await agent.ainvoke({"messages": [{"role": "user", "content": request}]}, config=config)
    return str(state["messages"][-1].content)


def main(argv: list[str]) -> int:
    """Run one request from the command line and print the agent's report."""
    request = " ".join(argv) or "Show me the recent script executions."
    with Executor() as executor:
        print(asyncio.run(ask(build_agent(executor), request)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
