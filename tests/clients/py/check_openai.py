"""The `openai` Python SDK, unmodified, through tether: `responses.create`
with stream=False and stream=True, a two-turn text chat and a tool loop,
and a 400 and a 429 from the emulator as the SDK's own exception types."""

from __future__ import annotations

import json

import httpx2
import openai

from harness import Target, check, finish, oracle_selftest

TOOLS = [
    {
        "type": "function",
        "name": "run_shell",
        "description": "Runs a shell command.",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    },
    {
        "type": "function",
        "name": "read_file",
        "description": "Reads a file.",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    },
]


def client(t: Target) -> openai.OpenAI:
    c = t.capture
    http = httpx2.Client(event_hooks={"request": [c.request_hook], "response": [c.response_hook]})
    return openai.OpenAI(base_url=t.base, api_key="sk-clients-test", max_retries=0, http_client=http)


def call(cl: openai.OpenAI, stream: bool, **kw):
    """One model call; returns the final Response (streamed: from
    `response.completed`, after checking the deltas add up to its text)."""
    if not stream:
        return cl.responses.create(**kw)
    deltas, final = [], None
    with cl.responses.create(stream=True, **kw) as events:
        for event in events:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                final = event.response
    assert final is not None, "stream ended without response.completed"
    assert "".join(deltas) == final.output_text, "text deltas do not add up to the final text"
    return final


def describe(resp) -> list:
    out = []
    for item in resp.output:
        if item.type == "function_call":
            out.append(["call", item.name, item.call_id, item.arguments])
        elif item.type == "message":
            out.append(["text", resp.output_text])
    return out


def chat(stream: bool):
    def run(t: Target):
        cl = client(t)
        history: list = [{"role": "user", "content": "Say something about sockets."}]
        transcript = []
        for follow_up in ("And about tokio?", "Thanks. One more line?"):
            resp = call(cl, stream, model="gpt-5", instructions="Be brief.", input=history,
                        metadata={"emulator_script": "tools=0,answer=120"})
            transcript.append(describe(resp))
            history += [item.model_dump(exclude_none=True) for item in resp.output]
            history.append({"role": "user", "content": follow_up})
        return transcript

    return run


def tool_loop(stream: bool):
    def run(t: Target):
        cl = client(t)
        history: list = [{"role": "user", "content": "Look around the repository."}]
        transcript = []
        while True:
            resp = call(cl, stream, model="gpt-5", instructions="You are a coding agent.", input=history,
                        tools=TOOLS, metadata={"emulator_script": "tools=4,args=80"})
            transcript.append(describe(resp))
            history += resp.output  # the SDK's own output objects, as apps pass them back
            calls = [i for i in resp.output if i.type == "function_call"]
            if not calls:
                return transcript
            for c in calls:
                cmd = json.loads(c.arguments)["cmd"]
                history.append({"type": "function_call_output", "call_id": c.call_id,
                                "output": f"{c.name}: {len(cmd.split())} words"})

    return run


def error(metadata: dict, exc: type[openai.APIStatusError], stream: bool):
    def run(t: Target):
        cl = client(t)
        try:
            call(cl, stream, model="gpt-5", input="hi", metadata=metadata)
        except exc as e:
            return [type(e).__name__, e.status_code, e.code, e.type, e.message]
        raise AssertionError(f"no {exc.__name__} raised")

    return run


def midstream_error(t: Target):
    """An upstream failure after events went out: the SDK sees the same
    `error` event (or exception) as from a plain-HTTP stream."""
    cl = client(t)
    seen = []
    try:
        with cl.responses.create(stream=True, model="gpt-5", input="hi", metadata={
                "emulator_script": "tools=0,answer=30", "emulator_fault": "error_at=3:500:server_error"}) as events:
            for event in events:
                seen.append([event.type, getattr(event, "code", None), getattr(event, "message", None)])
    except openai.APIError as e:
        seen.append(["raised", type(e).__name__, e.message])
    return seen


if __name__ == "__main__":
    oracle_selftest()
    for stream in (False, True):
        mode = "stream" if stream else "json"
        check(f"python openai {openai.__version__} {mode}: two-turn text", chat(stream), calls=2)
        check(f"python openai {openai.__version__} {mode}: tool loop", tool_loop(stream), calls=5)
        check(f"python openai {openai.__version__} {mode}: 400 -> BadRequestError",
              error({"emulator_script": "no_such_knob=1"}, openai.BadRequestError, stream), oracle=False)
        check(f"python openai {openai.__version__} {mode}: 429 -> RateLimitError",
              error({"emulator_fault": "rate_limit"}, openai.RateLimitError, stream), oracle=False)
    check(f"python openai {openai.__version__} stream: error event mid-stream", midstream_error, oracle=False)
    finish()
