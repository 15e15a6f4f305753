"""Reading Authelia's users file: parse it, validate each user's entry, index the lookups.

A user whose entry is unusable is locked out (or ignored) with a reason; the rest of the file
still loads. Only a file that cannot be read, is not YAML or has no `users` mapping fails whole
(LoadError, naming the file). Everything here runs in a worker thread.
"""

from __future__ import annotations

import codecs
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

from portal.config import FileBackendConfig, describe_yaml_error
from portal.users.base import User, fold
from portal.users.hashing import hash_password, is_supported

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode): a version of the file

WHERE = "authentication_backend.file"


def stamp_of(st: os.stat_result) -> Stamp:
    """Return the (mtime_ns, size, inode) stamp of a stat result."""
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class LoadError(Exception):
    """The users file could not be read or understood; the message names the file."""

    def __init__(self, message: str, stamp: Stamp | None = None) -> None:
        super().__init__(message)
        self.stamp = stamp


class ShapeError(Exception):
    """The document is not a users mapping."""


@dataclass(frozen=True)
class Account:
    """One user's entry: the User, the stored hash and whether it can be checked."""

    user: User
    digest: str | None  # the stored `password` value; None when the entry has none
    usable: bool  # the digest is one verify_password can check


@dataclass(frozen=True)
class Directory:
    """One loaded version of the users file, with its lookup indexes."""

    accounts: Mapping[str, Account]
    problems: Mapping[str, str]  # username -> why that user cannot sign in or is ignored
    stamp: Stamp
    by_folded_name: Mapping[str, tuple[str, ...]]
    by_email: Mapping[str, tuple[str, ...]]
    by_folded_email: Mapping[str, tuple[str, ...]]


def _index(pairs: list[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    index: dict[str, tuple[str, ...]] = {}
    for key, username in pairs:
        if username not in index.get(key, ()):
            index[key] = (*index.get(key, ()), username)
    return index


def _strings(value: Any, field: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (str(value),)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(str(v) for v in value if v)
    raise ValueError(f"'{field}' must be a string or a list of strings; the user is ignored")


def _account(username: str, entry: Any) -> tuple[Account, str | None]:
    """Read one user's entry; raise ValueError (a reason) when it cannot be used at all."""
    if not isinstance(entry, dict):
        raise ValueError("the entry is not a mapping; the user is ignored")
    display_name = entry.get("displayname")
    if display_name is not None and not isinstance(display_name, str):
        raise ValueError("'displayname' must be a string; the user is ignored")
    disabled = entry.get("disabled", False)
    if not isinstance(disabled, bool | ScalarBoolean):
        raise ValueError("'disabled' must be true or false; the user is ignored")
    user = User(
        username=username,
        display_name=str(display_name) if display_name else username,
        emails=_strings(entry.get("email"), "email"),
        groups=_strings(entry.get("groups"), "groups"),
        disabled=bool(disabled),
    )
    digest = entry.get("password")
    if digest is None:
        problem = "has no password; the user cannot sign in until one is set"
        return Account(user, None, False), problem
    if not isinstance(digest, str):
        problem = "the password is not a string; the user cannot sign in until it is reset"
        return Account(user, None, False), problem
    if not is_supported(str(digest)):
        # SECURITY: name the user and the problem, never the hash.
        problem = (
            "the password hash is in an unsupported or malformed format; "
            "the user cannot sign in until the password is reset"
        )
        return Account(user, str(digest), False), problem
    return Account(user, str(digest), True), None


def users_mapping(document: Any) -> dict[Any, Any]:
    """Return the document's `users` mapping; raise ShapeError if there is none."""
    if not isinstance(document, dict) or not isinstance(document.get("users"), dict):
        raise ShapeError("must be a mapping with a 'users' mapping at the top level")
    users: dict[Any, Any] = document["users"]
    return users


def build_directory(document: Any, stamp: Stamp) -> Directory:
    """Build the lookup state from a loaded document; raise ShapeError if it has no users map."""
    accounts: dict[str, Account] = {}
    problems: dict[str, str] = {}
    for name, entry in users_mapping(document).items():
        if not isinstance(name, str) or not name:
            problems[str(name)] = "the username is not a string; the user is ignored"
            continue
        username = str(name)
        try:
            account, problem = _account(username, entry)
        except ValueError as exc:
            problems[username] = str(exc)
            continue
        accounts[username] = account
        if problem:
            problems[username] = problem
    emails = [(e, name) for name, a in accounts.items() for e in a.user.emails]
    return Directory(
        accounts=accounts,
        problems=problems,
        stamp=stamp,
        by_folded_name=_index([(fold(name), name) for name in accounts]),
        by_email=_index(emails),
        by_folded_email=_index([(fold(e), name) for e, name in emails]),
    )


def round_trip_yaml() -> YAML:
    """Return a ruamel round-trip loader/dumper that keeps quotes and never folds lines."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line
    return yaml


def _read_text(path: str) -> tuple[str, bool, os.stat_result]:
    """Read the file as UTF-8; return the text, whether it had a BOM, and its stat."""
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        raw = handle.read()
    bom = raw.startswith(codecs.BOM_UTF8)
    return raw[len(codecs.BOM_UTF8) if bom else 0 :].decode("utf-8"), bom, st


def load_document(path: str) -> tuple[Any, str, bool, os.stat_result]:
    """Read and parse the file round-trip; raise LoadError naming the file and the reason."""
    try:
        text, bom, st = _read_text(path)
    except OSError as exc:
        raise LoadError(f"users file {path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise LoadError(f"users file {path}: is not UTF-8 text") from None
    try:
        document = round_trip_yaml().load(text)
    except YAMLError as exc:
        reason = describe_yaml_error(exc)
        raise LoadError(f"users file {path}: is not valid YAML: {reason}", stamp_of(st)) from None
    return document, text, bom, st


def read_directory(path: str) -> Directory:
    """Read, parse and index the file; raise LoadError naming the file and the reason."""
    document, _, _, st = load_document(path)
    try:
        return build_directory(document, stamp_of(st))
    except ShapeError as exc:
        raise LoadError(f"users file {path}: {exc}", stamp_of(st)) from None


def check_users_file(config: FileBackendConfig) -> list[str]:
    """Return why startup_check would refuse the file or its hashing settings, writing nothing.

    Each problem names its key: `authentication_backend.file.path: users file ...: is not valid
    YAML: ... (line 3, column 1)`, `authentication_backend.file.password: ...`.
    """
    problems = []
    try:
        read_directory(str(config.path))
    except LoadError as exc:
        problems.append(f"{WHERE}.path: {exc}")
    try:
        hash_password(secrets.token_urlsafe(16), config.password)
    except ValueError as exc:
        problems.append(f"{WHERE}.password: {exc}")
    return problems
