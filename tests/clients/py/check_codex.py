"""Codex CLI (`@openai/codex`, its native binary as npm ships it), unmodified:
`codex exec` with a custom model provider whose base URL is the emulator
directly, then tether. Codex cannot set `metadata`, so the emulator runs
with a default script of 4 tool calls (tests/clients/emulator.toml): the
emulator calls Codex's tools in the order of its tools list with
`{"cmd": "<words>"}`; `exec_command` runs the words as a shell command in an
empty scratch folder under the read-only sandbox (`command not found`), and
the other tools answer with an argument error. Both are harmless tool
outputs that Codex sends back, so the loop makes 5 model calls.

Same output: Codex's tool outputs carry a random `Chunk ID` and wall time,
so only the first call's output (tool name and `call_id`, which derive from
the whole first context) is compared exactly; after it, the tools called in
order and that a final answer came. Continuation and the oracle are checked
on every call, as for the other clients.

Codex's requests are captured by a small recording proxy between Codex
and its base URL (so the oracle compares what Codex actually sent)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness import Capture, Target, check, finish

OUT = Path(os.environ["CLIENTS_OUT"])
CODEX = Path(os.environ["CLIENTS_NODE_MODULES"]) / ".bin" / "codex"
VERSION = json.loads((CODEX.parent.parent / "@openai" / "codex" / "package.json").read_text())["version"]
HOP = {"connection", "transfer-encoding", "content-length", "keep-alive"}


class Recorder:
    """A loopback reverse proxy that records each request body and the
    `x-tether-route` of each answer, streaming the answer through."""

    def __init__(self, upstream: str, capture: Capture):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # close-delimited bodies: SSE streams through as it comes

            def log_message(self, *args):
                pass

            def forward(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                capture.on_request(self.command, self.path, body)
                conn = http.client.HTTPConnection(upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"host"}}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                capture.on_response(self.command, self.path, resp.headers)
                if self.headers.get("upgrade"):
                    # An upgrade is refused whole, in HTTP/1.1 (a WebSocket
                    # client reads an HTTP/1.0 answer as a broken handshake,
                    # not as the status it carries).
                    self.protocol_version = "HTTP/1.1"
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    self.close_connection = True
                    conn.close()
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.end_headers()
                while chunk := resp.read1(65536):
                    self.wfile.write(chunk)
                    self.wfile.flush()
                conn.close()

            do_GET = do_POST = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        outer.server = self.server

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def codex_exec(t: Target, websockets: bool = False):
    recorder = Recorder(t.hostport, t.capture)
    home = OUT / "codex-home"  # one path for both runs: Codex puts it in its prompt
    work = OUT / "codex-work"
    for d in (home, work):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    (home / "config.toml").write_text(
        f"""model = "gpt-5-codex"
model_provider = "tether"
check_for_update_on_startup = false

[model_providers.tether]
name = "tether"
base_url = "http://{recorder.addr}/v1"
wire_api = "responses"
env_key = "TETHER_CODEX_KEY"
supports_websockets = {"true" if websockets else "false"}
"""
    )
    env = {**os.environ, "CODEX_HOME": str(home), "TETHER_CODEX_KEY": "sk-clients-test"}
    try:
        done = subprocess.run(
            [str(CODEX), "exec", "--skip-git-repo-check", "-s", "read-only", "--color", "never",
             "Inspect this folder with your tools, then summarise."],
            cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )
    finally:
        recorder.close()
    (OUT / "last-run" / f"codex-{t.name}{'-ws' if websockets else ''}.stderr").write_text(done.stderr)
    if done.returncode != 0:
        raise AssertionError(f"codex exited {done.returncode}: {done.stderr[-1500:]}")
    if websockets and t.name == "tether":
        # tether's 426 is final: no retries before the fall back (a 404, as
        # the emulator gives, costs five over ~6 s).
        assert "Reconnecting" not in done.stderr, "Codex retried its upgrade against tether"
        assert "failed to connect to Responses WebSocket" in done.stderr, "Codex did not try WebSocket mode"
    bodies = t.capture.bodies
    (OUT / "last-run" / f"codex-{t.name}.requests.json").write_text(json.dumps(bodies, indent=1))
    assert bodies and all(b.get("stream") is True for b in bodies), "Codex streams every call"
    # What Codex did. Its tool outputs carry a random `Chunk ID` and a wall
    # time, so contexts (hence the emulator's later outputs) differ from run
    # to run whatever the route: only the first model call's output is
    # comparable exactly; after it, the tools called in order and whether a
    # final answer was printed.
    last = bodies[-1]["input"]
    calls = [[i["name"], i["call_id"]] for i in last if i.get("type") == "function_call"]
    return {"first_call": calls[:1], "tools": [name for name, _ in calls], "answered": bool(done.stdout.strip())}


if __name__ == "__main__":
    check(f"codex {VERSION} exec: 4-tool loop over custom provider", codex_exec, calls=5)
    # With WebSocket mode on, Codex tries an upgrade first: tether answers
    # 426 and Codex falls back to HTTP, where tether continues its turns.
    check(
        f"codex {VERSION} exec with supports_websockets: falls back to HTTP, same loop",
        lambda t: codex_exec(t, websockets=True),
        calls=5,
    )
    finish()
