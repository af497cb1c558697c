"""A scripted chat model for testing agents built on scoperun's tools without a real LLM.

LangChain's own fake chat models cannot bind tools; `ScriptedChatModel` can, and replays the
AI messages (with tool calls) it is given, one per model call:

    model = ScriptedChatModel(responses=[
        tool_call("execute_script_on_filesystem", script_name="create_file_inventory.py", case_name="Doe"),
        lambda messages: AIMessage(content="Done: " + messages[-1].content[:200]),
    ])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

__all__ = ["ScriptedChatModel", "tool_call"]

_ids = itertools.count(1)

Response = AIMessage | Callable[[list[BaseMessage]], AIMessage]


def tool_call(name: str, **args: Any) -> AIMessage:
    """An AI message asking for one tool call `name(**args)`."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{next(_ids)}",
                                              "type": "tool_call"}])


class ScriptedChatModel(BaseChatModel):
    """Replays `responses` in order; a callable response is given the conversation so far."""

    responses: list[Any]
    _next: int = PrivateAttr(default=0)
    _bound_tools: list[Any] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scoperun-scripted"

    @property
    def bound_tool_names(self) -> list[str]:
        """Names of the tools the agent bound (to check what a real model would have been offered)."""
        return [getattr(t, "name", None) or t.get("name", "?") for t in self._bound_tools]

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        """Record the tools and return the model itself: the script decides the calls."""
        self._bound_tools = list(tools)
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if self._next >= len(self.responses):
            raise RuntimeError(f"ScriptedChatModel ran out of responses after {len(self.responses)} model calls")
        response: Response = self.responses[self._next]
        self._next += 1
        message = response(list(messages)) if callable(response) else response
        return ChatResult(generations=[ChatGeneration(message=message)])
