"""`access_control`: who may reach what behind nginx (Authelia: schema/access_control.go)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, field_validator, model_validator

from portal.config.types import Model, network
from portal.patterns import GoPattern

Policy = Literal["bypass", "one_factor", "two_factor", "deny"]
_METHODS = frozenset(
    {
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "TRACE",
        "CONNECT",
        "COPY",
        "LOCK",
        "MKCOL",
        "MOVE",
        "PROPFIND",
        "PROPPATCH",
        "UNLOCK",
    }
)


def _as_tuple(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    return value


def _go_regex(pattern: str) -> str:
    """Return pattern if Go's regexp (Authelia's) takes it; raise ValueError saying why not."""
    # SECURITY: rules are matched against URLs an attacker chooses, with RE2's semantics
    # (portal.patterns); a pattern that only Python's re would take is refused at start-up.
    try:
        GoPattern.compile(pattern)
    except ValueError as exc:
        raise ValueError(
            f"{pattern!r} is not a regular expression in RE2 syntax (Go's, as Authelia): {exc}"
        ) from None
    return pattern


GoRegex = Annotated[str, AfterValidator(_go_regex)]


class AccessControlRule(Model):
    """One rule: the first rule whose every criterion matches decides."""

    domain: tuple[str, ...] = ()
    domain_regex: tuple[GoRegex, ...] = ()
    policy: Policy
    # OR of ANDs, as Authelia: 'user:a' | ['user:a', 'group:b'] | [['group:a', 'group:b'], ...]
    subject: tuple[tuple[str, ...], ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    resources: tuple[GoRegex, ...] = ()
    methods: tuple[str, ...] = ()

    @field_validator("domain", "domain_regex", "resources", "methods", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_tuple(value)

    @field_validator("domain")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.strip().lower() for d in value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(m.upper() for m in value)
        unknown = [m for m in upper if m not in _METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP method(s): {', '.join(unknown)}")
        return upper

    @field_validator("subject", mode="before")
    @classmethod
    def _subjects(cls, value: Any) -> Any:
        if isinstance(value, str):
            return ((value,),)
        if isinstance(value, list | tuple):
            return tuple(_as_tuple(item) for item in value)
        return value

    @field_validator("subject")
    @classmethod
    def _subject_kinds(cls, value: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        for group in value:
            for item in group:
                if not item.startswith(("user:", "group:")) or len(item.split(":", 1)[1]) == 0:
                    raise ValueError(f"{item!r} must be 'user:<name>' or 'group:<name>'")
        return value

    @field_validator("networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        value = _as_tuple(value)
        if isinstance(value, list | tuple):
            try:
                return tuple(network(str(v)) for v in value)
            except ValueError as exc:
                raise ValueError(
                    f"must be CIDR networks (named networks from 'definitions' are not "
                    f"supported): {exc}"
                ) from None
        return value

    @model_validator(mode="after")
    def _has_a_domain(self) -> AccessControlRule:
        if not self.domain and not self.domain_regex:
            raise ValueError("a rule needs 'domain' or 'domain_regex'")
        return self


class AccessControlConfig(Model):
    """Who may reach what behind nginx."""

    default_policy: Policy = "deny"
    rules: tuple[AccessControlRule, ...] = ()
