"""`portal serve` runs on uvloop when the speed extra is installed, else on asyncio's loop."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from portal.cli import event_loop_factory


def test_uvloop_is_chosen_when_installed() -> None:
    factory, name = event_loop_factory()
    assert name == "uvloop"
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_asyncios_loop_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    factory, name = event_loop_factory()
    assert name == "asyncio"
    loop = factory()
    try:
        assert isinstance(loop, asyncio.BaseEventLoop)
        assert not type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
