"""What every client check shares: the two targets, request capture, and
the three assertions of issue #9.

A check is a function `run(target) -> transcript` that drives one real
client against `target.base` (the emulator directly, then tether) while
`target.capture` records every `POST /v1/responses` body the client sent
and the `x-tether-route` of each answer. `check()` then asserts:

1. same output: the transcript through tether equals the one against the
   emulator directly (the emulator is deterministic in the context);
2. continued: through tether, the first model call was fresh and every
   later one continued (the route header), and the emulator counted exactly
   that many more `continuations`;
3. oracle: every context the emulator reconstructed equals the input the
   client actually sent, under the emulator's own normalisation
   (`src/emulator/oracle.rs`), and so do `instructions`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

EMU = os.environ["CLIENTS_EMU"]  # host:port of `tether emulate`
TETHER = os.environ["CLIENTS_TETHER"]  # host:port of tether, upstream = EMU

RESULTS: list[tuple[str, bool, str]] = []


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def emu_stats() -> dict:
    return get_json(f"http://{EMU}/_emulator/stats")


def emu_contexts() -> list[dict]:
    return get_json(f"http://{EMU}/_emulator/contexts")


def tether_sessions() -> list[dict]:
    return get_json(f"http://{TETHER}/debug/sessions")["sessions"]


@dataclass
class Capture:
    """Every `POST /v1/responses` the client sent, and the route tether chose."""

    bodies: list[dict] = field(default_factory=list)
    routes: list[str | None] = field(default_factory=list)

    def on_request(self, method: str, path: str, body: bytes | str | None) -> None:
        if method == "POST" and path.endswith("/responses") and body:
            self.bodies.append(json.loads(body))

    def on_response(self, method: str, path: str, headers: Any) -> None:
        if method == "POST" and path.endswith("/responses"):
            self.routes.append(headers.get("x-tether-route"))

    # httpx(2) event hooks, sync and async.
    def request_hook(self, request: Any) -> None:
        self.on_request(request.method, request.url.path, request.content)

    def response_hook(self, response: Any) -> None:
        self.on_response(response.request.method, response.request.url.path, response.headers)

    async def arequest_hook(self, request: Any) -> None:
        self.request_hook(request)

    async def aresponse_hook(self, response: Any) -> None:
        self.response_hook(response)


@dataclass
class Target:
    name: str  # "direct" or "tether"
    hostport: str
    capture: Capture = field(default_factory=Capture)

    @property
    def base(self) -> str:
        return f"http://{self.hostport}/v1"


# --- the oracle's normalisation (mirrors src/emulator/oracle.rs) ---


def _drop_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_nulls(x) for x in v]
    return v


def _part(p: Any) -> Any:
    if not isinstance(p, dict):
        return p
    p = dict(p)
    if p.get("type") == "output_text":
        p["type"] = "input_text"
    for key in ("annotations", "logprobs"):
        if p.get(key) == []:
            del p[key]
    return p


def normalize_item(item: Any) -> Any:
    item = _drop_nulls(item)
    if not isinstance(item, dict):
        return item
    if "type" not in item and "role" in item:
        item["type"] = "message"
    if item.get("type") in ("message", "function_call", "function_call_output"):
        item.pop("id", None)
        item.pop("status", None)
    if item.get("type") == "message" and "content" in item:
        c = item["content"]
        item["content"] = [{"type": "input_text", "text": c}] if isinstance(c, str) else [_part(p) for p in c]
    return item


def input_items(body: dict) -> list:
    inp = body.get("input", [])
    return [{"role": "user", "content": inp}] if isinstance(inp, str) else inp


def oracle_mismatches(bodies: list[dict], records: list[dict]) -> list[str]:
    """Pairs the client's requests with the emulator's records, in order."""
    problems = []
    if len(bodies) != len(records):
        problems.append(f"{len(bodies)} requests sent but {len(records)} contexts recorded")
    for n, (body, rec) in enumerate(zip(bodies, records)):
        sent = [normalize_item(i) for i in input_items(body)]
        held = [normalize_item(i) for i in rec["context"]]
        if sent != held:
            at = next((i for i, (a, b) in enumerate(zip(sent, held)) if a != b), min(len(sent), len(held)))
            problems.append(
                f"request {n}: context differs at item {at}: sent "
                f"{json.dumps(sent[at] if at < len(sent) else None)[:300]} held "
                f"{json.dumps(held[at] if at < len(held) else None)[:300]}"
            )
        if body.get("instructions") != rec.get("instructions"):
            problems.append(f"request {n}: instructions differ")
    return problems


def oracle_selftest() -> None:
    """The mirror agrees with the table in src/emulator/oracle.rs's own tests."""
    sent = [
        {"role": "user", "content": "hi"},
        {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "yo"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok", "id": "fco_1"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
    ]
    held = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "yo", "annotations": [], "logprobs": []}]},
        {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x", "content": None},
    ]
    assert oracle_mismatches([{"input": sent}], [{"context": held}]) == [], "equivalent forms must match"
    held[2] = {**held[2], "arguments": "{ }"}
    assert oracle_mismatches([{"input": sent}], [{"context": held}]), "different arguments must differ"
    held[4] = {**held[4], "id": "rs_2"}
    assert len(oracle_mismatches([{"input": sent}], [{"context": held}])) == 1, "reports the first difference"
    assert oracle_mismatches([{"input": "hi"}], [{"context": [], "instructions": None}]), "lengths differ"


# --- running a check ---


def run_on(target: Target, run: Callable[[Target], Any]) -> tuple[Any, list[dict], int]:
    """Runs against one target; returns the transcript, the new oracle records
    and how many more continuations the emulator counted."""
    before_records = len(emu_contexts())
    before = emu_stats()["continuations"]
    transcript = run(target)
    records = emu_contexts()[before_records:]
    return transcript, records, emu_stats()["continuations"] - before


def check(name: str, run: Callable[[Target], Any], *, calls: int | None = None, oracle: bool = True) -> None:
    """Runs `run` directly and through tether and asserts issue #9's three
    properties; records the result. `calls` is the expected number of model
    calls (checked when given)."""
    started = time.monotonic()
    try:
        direct = Target("direct", EMU)
        d_out, d_records, _ = run_on(direct, run)
        through = Target("tether", TETHER)
        known = max((s["id"] for s in tether_sessions()), default=0)
        t_out, t_records, t_cont = run_on(through, run)
        problems = []
        if d_out != t_out:
            problems.append(f"output differs:\n  direct: {str(d_out)[:600]}\n  tether: {str(t_out)[:600]}")
        n = len(through.capture.bodies)
        if calls is not None and n != calls:
            problems.append(f"expected {calls} model calls, client made {n}")
        if oracle:
            want = ["fresh"] + ["continue"] * (n - 1)
            if through.capture.routes != want:
                problems.append(f"routes {through.capture.routes}, want {want}")
            if t_cont != n - 1:
                problems.append(f"emulator counted {t_cont} continuations, want {n - 1}")
            new = [(s["fresh"], s["continues"]) for s in tether_sessions() if s["id"] > known]
            if new != [(1, n - 1)]:
                problems.append(f"/debug/sessions new sessions (fresh, continues) {new}, want [(1, {n - 1})]")
            for label, t, recs in (("direct", direct, d_records), ("tether", through, t_records)):
                problems += [f"oracle ({label}): {p}" for p in oracle_mismatches(t.capture.bodies, recs)]
        ok = not problems
        detail = f"{n} calls, {time.monotonic() - started:.1f}s" if ok else "\n    ".join(problems)
    except Exception:  # a client exception is a failed check, not a crash
        ok, detail = False, traceback.format_exc()
    RESULTS.append((name, ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)


def finish() -> None:
    """Writes the results where tests/clients/run counts them."""
    out = os.environ.get("CLIENTS_RESULTS")
    if out:
        with open(out, "a") as f:
            for name, ok, _ in RESULTS:
                f.write(f"{'pass' if ok else 'fail'} {name}\n")
    sys.exit(0 if all(ok for _, ok, _ in RESULTS) else 1)
