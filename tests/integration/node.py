"""Run a small node script with the JWT libraries apps use (jose, jsonwebtoken), installed by
`make test` under .venv/node-jwt (NODE_JWT_MODULES overrides), for interop checks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NODE_JWT_MODULES = Path(
    os.environ.get("NODE_JWT_MODULES", REPO / ".venv" / "node-jwt" / "node_modules")
)


def run_node(script: str, data: Any = None, *, timeout: float = 30) -> Any:
    """Run `script` (CommonJS; `require("jose")` and `require("jsonwebtoken")` resolve) with
    `data` as JSON on stdin (read it with `JSON.parse(require("fs").readFileSync(0))`); return
    what it prints as JSON. Raises AssertionError naming the script's stderr when it fails, and
    when the packages are missing (run `make test` once): a missing tool is a failure, never a
    skip."""
    if not (NODE_JWT_MODULES / "jose").is_dir() or not (NODE_JWT_MODULES / "jsonwebtoken").is_dir():
        raise AssertionError(f"jose/jsonwebtoken are not installed under {NODE_JWT_MODULES}")
    done = subprocess.run(
        ["node", "-e", script],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NODE_PATH": str(NODE_JWT_MODULES)},
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"node failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)
