"""The `openai` Node SDK through tether: each scenario of
tests/clients/node/check_openai.mjs runs in node against the emulator
directly and through tether; the assertions are the harness's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from harness import Target, check, finish

SCRIPT = Path(__file__).resolve().parent.parent / "node" / "check_openai.mjs"
MODULES = Path(os.environ["CLIENTS_NODE_MODULES"])
VERSION = json.loads((MODULES / "openai" / "package.json").read_text())["version"]


def scenario(name: str):
    def run(t: Target):
        # Node resolves `openai` from the script's own folder upwards, so
        # the script runs from a copy beside the installed node_modules.
        script = MODULES.parent / SCRIPT.name
        script.write_text(SCRIPT.read_text())
        done = subprocess.run(
            ["node", str(script), name, t.base], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise AssertionError(f"node exited {done.returncode}: {done.stderr.strip()[-1500:]}")
        result = json.loads(done.stdout)
        t.capture.bodies += result["bodies"]
        t.capture.routes += result["routes"]
        return result["transcript"]

    return run


if __name__ == "__main__":
    for mode in ("json", "stream"):
        check(f"node openai {VERSION} {mode}: two-turn text", scenario(f"{mode}:chat"), calls=2)
        check(f"node openai {VERSION} {mode}: tool loop", scenario(f"{mode}:tools"), calls=5)
        check(f"node openai {VERSION} {mode}: 400 -> BadRequestError", scenario(f"{mode}:e400"), oracle=False)
        check(f"node openai {VERSION} {mode}: 429 -> RateLimitError", scenario(f"{mode}:e429"), oracle=False)
    finish()
