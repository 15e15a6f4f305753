"""Loading the configuration: YAML files, environment overrides, and what is wrong with them.

Loading reads one or more YAML files, applies `PORTAL_*` / `AUTHELIA_*` environment overrides
(and `*_FILE` for secrets), drops the Authelia keys the portal does not implement with one warning
each, validates everything with the root model (portal.config.root.Config), adds what the valid
sections report beyond validation (Model.problems: the LDAP "required with implementation X"
checks), and reports every problem at once, each naming its path. Authelia:
internal/configuration (sources, koanf callbacks).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, SecretStr, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import YAMLError

from portal.config.root import Config
from portal.config.types import Model
from portal.errors import ConfigError

ENV_PREFIXES = ("PORTAL_", "AUTHELIA_")
# Variables with these names steer the program itself, not a configuration key.
ENV_NOT_KEYS = frozenset({"CONFIG", "CONFIG_FILTERS", "CONFIG_EXPERIMENTAL_FILTERS"})

# Keys Authelia has and the portal does not implement: one warning each, then ignored.
UNSUPPORTED_KEYS = (
    "default_2fa_method",
    "default_redirection_url",
    "jwt_secret",
    "webauthn.metadata",
    "webauthn.experimental_enable_passkey_uv_two_factors",
    "webauthn.experimental_enable_passkey_upgrade",
    "duo_api",
    "identity_providers",
    "ntp",
    "definitions",
    "privacy_policy",
    "server.disable_healthcheck",
    "server.buffers",
    "server.timeouts",
    "server.tls",
    "server.headers",
    "server.endpoints.enable_pprof",
    "server.endpoints.enable_expvars",
    "server.endpoints.authz",
    "server.endpoints.rate_limits.second_factor_duo",
    "log.keep_stdout",
    "authentication_backend.file.extra_attributes",
    "authentication_backend.ldap.attributes.extra",
    "session.domain",
    "storage.mysql",
)


@dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]  # "*" stands for a list index
    secret: bool
    is_list: bool


def _unwrap(annotation: Any) -> list[Any]:
    """Return the non-None members of an Optional/Union/Annotated annotation."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _unwrap(arg) if a is not None]
    return [] if annotation is type(None) else [annotation]


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[_Leaf]:
    """Walk a model and yield every key an environment variable may set."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        for member in _unwrap(field.annotation):
            origin = typing.get_origin(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                yield from _leaves(member, (*prefix, key))
            elif origin is tuple:
                inner = typing.get_args(member)[0]
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from _leaves(inner, (*prefix, key, "*"))
                else:
                    yield _Leaf((*prefix, key), False, True)
            else:
                yield _Leaf((*prefix, key), member is SecretStr, False)
            break


def _env_pattern(leaf: _Leaf) -> re.Pattern[str]:
    parts = [r"(\d+)" if p == "*" else re.escape(p.upper()) for p in leaf.path]
    return re.compile("_".join(parts))


def _set_path(raw: dict[str, Any], path: Sequence[str | int], value: Any) -> None:
    node: Any = raw
    for step, nxt in zip(path, path[1:], strict=False):
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(step, int):
            while len(node) <= step:
                node.append({})
            if not isinstance(node[step], type(empty)):
                node[step] = empty
            node = node[step]
        else:
            if not isinstance(node.get(step), type(empty)):
                node[step] = empty
            node = node[step]
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


@dataclass(frozen=True)
class _Variable:
    """One environment variable that sets a key."""

    name: str
    value: str
    from_file: bool  # a *_FILE variable: value is the path of a file holding the secret


# Stands in for a secret that could not be read, or was given twice, so that validation reports
# nothing that follows from it ('option is required', 'provider ... needs secret_key').
_UNREAD_SECRET = "unread" * 11


def _env_name(path: Sequence[str | int]) -> str:
    return "PORTAL_" + "_".join(str(p).upper() for p in path)


def _environment_variables(
    environ: Mapping[str, str], warnings: list[str]
) -> dict[tuple[str | int, ...], tuple[_Leaf, list[_Variable]]]:
    """Find the variables that set each key, AUTHELIA_ ones before PORTAL_ ones."""
    leaves = [(leaf, _env_pattern(leaf)) for leaf in _leaves(Config)]
    found: dict[tuple[str | int, ...], tuple[_Leaf, list[_Variable]]] = {}
    for prefix in reversed(ENV_PREFIXES):  # PORTAL_ comes last, so it wins
        for name, value in sorted(environ.items()):
            if not name.startswith(prefix) or name[len(prefix) :] in ENV_NOT_KEYS:
                continue
            rest = name[len(prefix) :]
            from_file = rest.endswith("_FILE")
            for leaf, pattern in leaves:
                match = pattern.fullmatch(rest[:-5] if from_file else rest)
                if match is None or (from_file and not leaf.secret):
                    continue
                indexes = iter(int(g) for g in match.groups())
                path = tuple(next(indexes) if p == "*" else p for p in leaf.path)
                found.setdefault(path, (leaf, []))[1].append(_Variable(name, value, from_file))
                break
            else:
                if prefix == "PORTAL_":
                    warnings.append(f"environment variable {name} matches no configuration key")
    return found


def _get_path(data: Any, path: Sequence[str | int]) -> Any:
    for step in path:
        if isinstance(step, int):
            data = data[step] if isinstance(data, list) and step < len(data) else None
        else:
            data = data.get(step) if isinstance(data, dict) else None
    return data


def _in_places(places: Sequence[str]) -> str:
    """Say 'in A and in B', 'in A, in B and in C'."""
    named = [f"in {place}" for place in places]
    return ", ".join(named[:-1]) + " and " + named[-1]


def _apply_environment(
    raw: dict[str, Any],
    documents: Sequence[tuple[Path, Mapping[str, Any]]],
    environ: Mapping[str, str],
    problems: list[str],
    warnings: list[str],
) -> set[str]:
    """Override keys from PORTAL_* (or AUTHELIA_*) variables, and secrets from *_FILE.

    A secret comes from one place: a *_FILE variable with a value in the YAML, or two variables
    for one secret (a value and its file, or both prefixes), is a problem naming every place, as
    Authelia refuses a secret "already defined in other configuration sources" (an empty value
    does not count). A plain variable overrides the YAML, for secrets as for every key; for other
    keys PORTAL_ wins over AUTHELIA_. Return the sections holding a secret that was not read.
    """
    unread: set[str] = set()
    for path, (leaf, variables) in _environment_variables(environ, warnings).items():
        dotted = _format_location(path)
        given = [v for v in variables if v.from_file or v.value]
        if leaf.secret:
            files = [str(p) for p, data in documents if _get_path(data, path) not in (None, "")]
            places = [*files[-1:], *sorted(v.name for v in given)]
            if len(given) > 1 or (files and any(v.from_file for v in given)):
                problems.append(
                    f"{dotted}: given {_in_places(places)}; give a secret in one place only"
                )
                _set_path(raw, path, _UNREAD_SECRET)
                unread.add(str(path[0]))
                continue
        variable = (given or variables)[-1]
        value: Any = variable.value
        if variable.from_file:
            try:
                value = Path(value).read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                problems.append(
                    f"{dotted}: cannot read the file {variable.name} names ({value}): {reason}"
                )
                value = _UNREAD_SECRET
                unread.add(str(path[0]))
        elif leaf.is_list:
            value = [v.strip() for v in value.split(",") if v.strip()]
        _set_path(raw, path, value)
    return unread


def _drop_unsupported(raw: dict[str, Any], warnings: list[str]) -> None:
    """Remove keys Authelia has and the portal does not implement, warning once for each."""
    for dotted in UNSUPPORTED_KEYS:
        *parents, last = dotted.split(".")
        node: Any = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            del node[last]
            warnings.append(f"{dotted}: not supported by the portal; ignored")


def _format_location(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "configuration"


@functools.cache
def _secret_keys() -> frozenset[str]:
    return frozenset(".".join(leaf.path) for leaf in _leaves(Config) if leaf.secret)


def _format_error(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    message = str(error["msg"])
    loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    if kind == "missing" and _format_location(loc) in _secret_keys():
        variable = _env_name(loc)
        message = (
            f"option is required: write it into a file named by {variable}_FILE (or set "
            f"{variable}, or write it in the configuration file); generate one with "
            "'portal crypto rand'"
        )
    elif kind == "missing":
        message = "option is required"
    elif kind == "extra_forbidden":
        message = "unknown option (check the spelling and the indentation)"
    elif kind == "string_too_short":
        message = f"must be at least {error['ctx']['min_length']} characters"
    elif kind == "too_short":
        message = f"must have at least {error['ctx']['min_length']} item(s)"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    elif message.startswith("Input should be"):
        message = "must be" + message.removeprefix("Input should be")
    return f"{_format_location(loc)}: {message}"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def describe_yaml_error(exc: YAMLError) -> str:
    """Say what is wrong with a YAML text and where, on one line and quoting no value."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    if isinstance(exc, DuplicateKeyError):
        # SECURITY: ruamel's own message quotes the values, which may be secrets or hashes.
        return f"a key appears twice in the same mapping{where}"
    problem = " ".join(str(getattr(exc, "problem", None) or type(exc).__name__).split())
    return f"{problem}{where}"


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    yaml = YAML(typ="safe", pure=True)
    try:
        with path.open(encoding="utf-8") as handle:
            data = yaml.load(handle)
    except OSError as exc:
        problems.append(f"{path}: cannot read the configuration file: {exc.strerror}")
        return {}
    except UnicodeDecodeError:
        problems.append(f"{path}: the configuration file is not UTF-8 text")
        return {}
    except YAMLError as exc:
        problems.append(f"{path}: not valid YAML: {describe_yaml_error(exc)}")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: the configuration must be a mapping of sections")
        return {}
    return data


@dataclass(frozen=True)
class Reading:
    """What reading the configuration found.

    `config` is the validated configuration, or None when there are `problems` (each naming
    its path). `sections` holds every top-level section (`server`, `storage`, ...) that is valid
    on its own, so that checks of the files it names can run alongside the other problems.
    """

    config: Config | None
    sections: Mapping[str, BaseModel]
    problems: list[str]
    warnings: list[str]


def _valid_sections(raw: Mapping[str, Any], skip: set[str]) -> dict[str, BaseModel]:
    """Validate each top-level section on its own; keep those that pass."""
    sections: dict[str, BaseModel] = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        if name in skip or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        if name not in raw:
            if not field.is_required():
                sections[name] = field.get_default(call_default_factory=True)
            continue
        try:
            sections[name] = model.model_validate(raw[name])
        except ValidationError:
            continue
    return sections


def _section_problems(sections: Mapping[str, BaseModel]) -> list[str]:
    """Collect what the valid sections report beyond validation (Model.problems)."""
    return [p for s in sections.values() if isinstance(s, Model) for p in s.problems()]


def read_sections(paths: Sequence[Path], environ: Mapping[str, str]) -> Reading:
    """Load and validate the configuration, collecting every problem instead of raising.

    Files are read in order, later ones winning, then `PORTAL_*` / `AUTHELIA_*` variables
    override keys. A file that cannot be read or parsed is reported alone: what else could be
    said would follow from it.
    """
    problems: list[str] = []
    warnings: list[str] = []
    documents = [(path, _read_yaml(path, problems)) for path in paths]
    if problems:
        return Reading(None, {}, problems, warnings)
    raw: dict[str, Any] = {}
    for _, data in documents:
        _merge(raw, copy.deepcopy(data))
    unread = _apply_environment(raw, documents, environ, problems, warnings)
    _drop_unsupported(raw, warnings)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems.extend(_format_error(e) for e in errors)
        broken = {str(e["loc"][0]) for e in errors if e["loc"]}
        sections = _valid_sections(raw, unread | broken)
        problems.extend(_section_problems(sections))
        return Reading(None, sections, problems, warnings)
    sections = {name: getattr(config, name) for name in Config.model_fields if name not in unread}
    problems.extend(_section_problems(sections))
    problems.extend(config.shared_secret_problems())
    if problems:
        return Reading(None, sections, problems, warnings)
    warnings.extend(_second_factor_warnings(config))
    return Reading(config, sections, problems, warnings)


def _second_factor_warnings(config: Config) -> list[str]:
    """Warn when two_factor is asked for but no second factor can be used (totp.disable)."""
    access = config.access_control
    uses = access.default_policy == "two_factor" or any(
        rule.policy == "two_factor" for rule in access.rules
    )
    if uses and config.totp.disable and config.webauthn.disable:
        return [
            "access_control asks for two_factor but every second-factor method is disabled "
            "(totp.disable, webauthn.disable): nobody can reach those resources"
        ]
    return []


def read_config(paths: Sequence[Path], environ: Mapping[str, str]) -> tuple[Config, list[str]]:
    """Load and validate the configuration; return it with its warnings or raise ConfigError."""
    reading = read_sections(paths, environ)
    if reading.config is None:
        raise ConfigError(reading.problems)
    return reading.config, reading.warnings


def load_config(paths: Sequence[Path], environ: Mapping[str, str] | None = None) -> Config:
    """Load the configuration from files and the process environment, logging its warnings."""
    config, warnings = read_config(paths, os.environ if environ is None else environ)
    for warning in warnings:
        logging.getLogger("portal.config").warning("configuration: %s", warning)
    return config
