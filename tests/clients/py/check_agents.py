"""`openai-agents`, unmodified, through tether: an Agent with two function
tools on `OpenAIResponsesModel` with a custom `AsyncOpenAI(base_url=…)`,
running a tool loop of 7 model calls (6 tool calls, then the answer),
streamed and not."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import httpx2
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from harness import Target, check, finish

set_tracing_disabled(True)
AGENTS = version("openai-agents")

# The emulator calls the request's function tools in turn, each with
# arguments {"cmd": "<words>"}.


@function_tool
def count_words(cmd: str) -> str:
    """Counts the words of a command line."""
    return f"{len(cmd.split())} words"


@function_tool
def first_word(cmd: str) -> str:
    """Returns the first word of a command line."""
    return cmd.split()[0] if cmd.split() else ""


def agent_loop(stream: bool):
    def run(t: Target):
        c = t.capture
        http = httpx2.AsyncClient(event_hooks={"request": [c.arequest_hook], "response": [c.aresponse_hook]})
        client = AsyncOpenAI(base_url=t.base, api_key="sk-clients-test", max_retries=0, http_client=http)
        agent = Agent(
            name="inspector",
            instructions="Inspect commands with your tools, then summarise.",
            model=OpenAIResponsesModel(model="gpt-5", openai_client=client),
            model_settings=ModelSettings(metadata={"emulator_script": "tools=6,args=60"}),
            tools=[count_words, first_word],
        )

        async def go():
            if stream:
                result = Runner.run_streamed(agent, "Inspect six commands.", max_turns=20)
                async for _ in result.stream_events():
                    pass
            else:
                result = await Runner.run(agent, "Inspect six commands.", max_turns=20)
            calls = [
                [i.raw_item.name, i.raw_item.arguments]
                for i in result.new_items
                if i.type == "tool_call_item"
            ]
            outputs = [i.output for i in result.new_items if i.type == "tool_call_output_item"]
            return {"final": result.final_output, "calls": calls, "outputs": outputs}

        return asyncio.run(go())

    return run


if __name__ == "__main__":
    check(f"openai-agents {AGENTS} Runner.run: 6-tool loop", agent_loop(False), calls=7)
    check(f"openai-agents {AGENTS} Runner.run_streamed: 6-tool loop", agent_loop(True), calls=7)
    finish()
