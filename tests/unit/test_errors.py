"""The one exception tree: every PortalError subclass lives in portal.errors, and its docstring
draws each of them (STYLE.md house rule 6; issue 13 item 1)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import portal
from portal import errors
from portal.errors import PortalError

# Running `python -m portal` is what importing portal.__main__ does: it is a script, not a module.
SCRIPTS = {"portal.__main__"}


def portal_modules() -> list[ModuleType]:
    """Import and return every module of the portal package, subpackages included."""
    names = [
        info.name
        for info in pkgutil.walk_packages(portal.__path__, prefix="portal.")
        if info.name not in SCRIPTS
    ]
    return [importlib.import_module(name) for name in names]


def every_subclass(cls: type[PortalError]) -> set[type[PortalError]]:
    """Return the subclasses of cls at any depth."""
    found: set[type[PortalError]] = set()
    for sub in cls.__subclasses__():
        found |= {sub} | every_subclass(sub)
    return found


def test_the_walk_reaches_every_corner_of_the_package() -> None:
    names = {module.__name__ for module in portal_modules()}

    # A walk that stopped at the top level would prove nothing about the subpackages.
    assert {
        "portal.errors",
        "portal.tokens",
        "portal.signin",
        "portal.security_questions",
        "portal.notify.base",
        "portal.notify.outbox",
        "portal.captcha.altcha",
        "portal.handlers.reset",
        "portal.users.file",
        "portal.storage.sqlite",
    } <= names


def test_no_portal_error_is_defined_outside_portal_errors() -> None:
    defined_elsewhere = {
        f"{module.__name__}.{name}"
        for module in portal_modules()
        for name, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, PortalError) and cls.__module__ == module.__name__
        if module.__name__ != "portal.errors"
    }
    # A class nested in another is no module member; the subclass registry still holds it.
    defined_elsewhere |= {
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in every_subclass(PortalError)
        if cls.__module__.startswith("portal.") and cls.__module__ != "portal.errors"
    }

    assert defined_elsewhere == set()


def test_the_docstring_draws_every_error_of_the_tree() -> None:
    tree = errors.__doc__ or ""
    names = {
        name
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, PortalError) and cls is not PortalError
    }
    drawn = {name for name in names if f"+-- {name} " in tree}

    assert len(names) >= 20
    assert drawn == names
