"""Schemathesis over GET /api/openapi.yml against the real portal (issue 18): every answer the
portal gives matches its published document, and none is a 5xx or leaves a traceback.

Bounded for `make test` (PORTAL_OPENAPI_EXAMPLES cases per operation and phase, a fixed seed:
PORTAL_OPENAPI_SEED); `make fuzz` runs it longer through bench/fuzz.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.openapi_fuzz import run_schemathesis
from tests.fuzz.server import (
    FuzzPortal,
    start_portal,
    stop_portal,
    tracebacks,
    wait_until_healthy,
)

DEFAULT_EXAMPLES = 10
DEFAULT_SEED = 18


@pytest.fixture
def guarded_portal(tmp_path: Path) -> Iterator[FuzzPortal]:
    """The portal with every optional route on (the fuzz server's guarded profile)."""
    portal = start_portal(tmp_path / "guarded", "guarded")
    try:
        asyncio.run(wait_until_healthy(portal))
        yield portal
    finally:
        stop_portal(portal)


def test_every_answer_matches_the_published_document(
    guarded_portal: FuzzPortal, tmp_path: Path
) -> None:
    """Schemathesis's checks pass on every operation, signed in (elevated) and anonymous."""
    examples = int(os.environ.get("PORTAL_OPENAPI_EXAMPLES", DEFAULT_EXAMPLES))
    seed = int(os.environ.get("PORTAL_OPENAPI_SEED", DEFAULT_SEED))
    start = guarded_portal.log_size()
    figures = run_schemathesis(
        guarded_portal, tmp_path / "reports", max_examples=examples, seed=seed
    )
    print(figures.summary())
    assert figures.operations >= 2 * 37, figures.summary()  # all but sign-out, then all
    assert figures.passed, figures.summary() + "\n" + "\n".join(figures.outputs)[-20000:]
    logged = tracebacks(guarded_portal.read_log(start))
    assert not logged, [(t.message, t.last_lines) for t in logged]
    assert guarded_portal.process.poll() is None
