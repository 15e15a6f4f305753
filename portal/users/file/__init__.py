"""Authelia's YAML users file (users_database.yml): loading, watching, lookups, password writes.

    users:
      john:
        displayname: "John Doe"
        password: "$argon2id$v=19$m=65536,t=3,p=4$..."
        email: john@example.com        # or a list of addresses
        groups: [admins, dev]
        disabled: false

A user whose entry is unusable is locked out (or ignored) and logged once; the rest of the file
still loads. A new password replaces only that user's `password` value: everything else in the file
(comments, order, quoting, other users' edits made meanwhile) stays byte for byte, and the file is
replaced atomically. All file access and hashing runs in worker threads.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import io
import logging
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from portal.config import FileBackendConfig, describe_yaml_error
from portal.errors import (
    PasswordWriteError,
    StartupCheckError,
    UnsupportedHashError,
    UserBackendError,
)
from portal.users.base import User, fold
from portal.users.hashing import hash_password, is_supported, verify_password
from portal.users.passwords import normalize_password, password_candidates

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode): a version of the file

WHERE = "authentication_backend.file"
_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN_DIGEST = re.compile(r"\$[$A-Za-z0-9./+=,-]*")


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class _LoadError(Exception):
    """The users file could not be read or understood; the message names the file."""

    def __init__(self, message: str, stamp: Stamp | None = None) -> None:
        super().__init__(message)
        self.stamp = stamp


class _ShapeError(Exception):
    """The document is not a users mapping."""


@dataclass(frozen=True)
class _Account:
    user: User
    digest: str | None  # the stored `password` value; None when the entry has none
    usable: bool  # the digest is one verify_password can check


@dataclass(frozen=True)
class _Directory:
    """One loaded version of the users file, with its lookup indexes."""

    accounts: Mapping[str, _Account]
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


def _account(username: str, entry: Any) -> tuple[_Account, str | None]:
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
        return _Account(user, None, False), problem
    if not isinstance(digest, str):
        problem = "the password is not a string; the user cannot sign in until it is reset"
        return _Account(user, None, False), problem
    if not is_supported(str(digest)):
        # SECURITY: name the user and the problem, never the hash.
        problem = (
            "the password hash is in an unsupported or malformed format; "
            "the user cannot sign in until the password is reset"
        )
        return _Account(user, str(digest), False), problem
    return _Account(user, str(digest), True), None


def _users_mapping(document: Any) -> dict[Any, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("users"), dict):
        raise _ShapeError("must be a mapping with a 'users' mapping at the top level")
    users: dict[Any, Any] = document["users"]
    return users


def _directory(document: Any, stamp: Stamp) -> _Directory:
    """Build the lookup state from a loaded document; raise _ShapeError if it has no users map."""
    accounts: dict[str, _Account] = {}
    problems: dict[str, str] = {}
    for name, entry in _users_mapping(document).items():
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
    return _Directory(
        accounts=accounts,
        problems=problems,
        stamp=stamp,
        by_folded_name=_index([(fold(name), name) for name in accounts]),
        by_email=_index(emails),
        by_folded_email=_index([(fold(e), name) for e, name in emails]),
    )


def _round_trip_yaml() -> YAML:
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


def _load_document(path: str) -> tuple[Any, str, bool, os.stat_result]:
    """Read and parse the file round-trip; raise _LoadError naming the file and the reason."""
    try:
        text, bom, st = _read_text(path)
    except OSError as exc:
        raise _LoadError(f"users file {path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _LoadError(f"users file {path}: is not UTF-8 text") from None
    try:
        document = _round_trip_yaml().load(text)
    except YAMLError as exc:
        reason = describe_yaml_error(exc)
        raise _LoadError(f"users file {path}: is not valid YAML: {reason}", _stamp(st)) from None
    return document, text, bom, st


def _read_directory(path: str) -> _Directory:
    """Read, parse and index the file; raise _LoadError naming the file and the reason."""
    document, _, _, st = _load_document(path)
    try:
        return _directory(document, _stamp(st))
    except _ShapeError as exc:
        raise _LoadError(f"users file {path}: {exc}", _stamp(st)) from None


def check_users_file(config: FileBackendConfig) -> list[str]:
    """Return why startup_check would refuse the file or its hashing settings, writing nothing.

    Each problem names its key: `authentication_backend.file.path: users file ...: is not valid
    YAML: ... (line 3, column 1)`, `authentication_backend.file.password: ...`.
    """
    problems = []
    try:
        _read_directory(str(config.path))
    except _LoadError as exc:
        problems.append(f"{WHERE}.path: {exc}")
    try:
        hash_password(secrets.token_urlsafe(16), config.password)
    except ValueError as exc:
        problems.append(f"{WHERE}.password: {exc}")
    return problems


def _child(node: Node | None, key: str) -> Node | None:
    """Return the value node of a string key in a mapping node, if there is exactly one."""
    if not isinstance(node, MappingNode):
        return None
    found = [
        value
        for key_node, value in node.value
        if isinstance(key_node, ScalarNode) and key_node.tag == _STR_TAG and key_node.value == key
    ]
    return found[0] if len(found) == 1 else None


def _splice_password(text: str, username: str, digest: str) -> str | None:
    """Replace only the characters of the user's password scalar; None if that is not simple."""
    try:
        root = YAML(typ="safe", pure=True).compose(text)
    except YAMLError:
        return None
    node = _child(_child(_child(root, "users"), username), "password")
    if not isinstance(node, ScalarNode) or node.tag != _STR_TAG:
        return None
    start, end = node.start_mark.index, node.end_mark.index
    old = text[start:end]
    if node.style in ('"', "'") and len(old) >= 2 and old[0] == old[-1] == node.style:
        new = f"{node.style}{digest}{node.style}"
    elif node.style is None and old == node.value and _PLAIN_DIGEST.fullmatch(digest):
        new = digest
    else:  # anchors, tags, block or multi-line scalars: let the round-trip dumper do it
        return None
    return text[:start] + new + text[end:]


def _guess_indents(text: str) -> tuple[int, int, int]:
    """Guess (mapping indent, sequence indent, dash offset) so a re-dumped file looks the same."""
    mapping: int | None = None
    sequence: tuple[int, int] | None = None
    parent: int | None = None  # indent of the previous line when it was a bare `key:`
    for line in text.splitlines():
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        lead = len(line) - len(line.lstrip(" "))
        if parent is not None and lead > parent and mapping is None and not body.startswith("-"):
            mapping = lead - parent
        if parent is not None and body.startswith("- ") and sequence is None:
            content = len(body) - len(body[1:].lstrip(" "))
            sequence = (lead - parent + content, lead - parent)
        parent = lead if body.endswith(":") and not body.startswith("-") else None
    mapping = mapping or 2
    seq, offset = sequence or (mapping, 0)
    return mapping, max(seq, offset + 2), offset


def _dump(document: Any, original: str) -> str:
    """Dump the round-trip document in the original file's indentation and markers."""
    yaml = _round_trip_yaml()
    mapping, sequence, offset = _guess_indents(original)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    lines = [s for s in (line.strip() for line in original.splitlines()) if s and s[0] != "#"]
    yaml.explicit_start = bool(lines) and lines[0].startswith("---")
    yaml.explicit_end = bool(lines) and lines[-1] == "..."
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def _only_password_changed(before: str, after: str, username: str, digest: str) -> bool:
    """Return whether `after` holds the same data as `before` except the user's new password."""
    yaml = YAML(typ="safe", pure=True)
    try:
        expected, actual = yaml.load(before), yaml.load(after)
        expected["users"][username]["password"] = digest
    except (YAMLError, TypeError, KeyError):
        return False
    return bool(expected == actual)


def _styled(digest: str, old: Any) -> str:
    """Return the digest as a scalar quoted like the value it replaces."""
    styled: str = digest
    if isinstance(old, SingleQuotedScalarString):
        styled = SingleQuotedScalarString(digest)
    elif isinstance(old, DoubleQuotedScalarString) or old is None:
        styled = DoubleQuotedScalarString(digest)  # as Authelia writes it
    return styled


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_file(path: str, data: bytes, original: os.stat_result) -> Stamp:
    """Write data beside path and rename it over path; return the new file's stamp."""
    directory, name = os.path.split(path)
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        try:
            # SECURITY: the users file holds hashes; keep its mode (mkstemp starts at 0600).
            os.fchmod(fd, stat.S_IMODE(original.st_mode))
            if (original.st_uid, original.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, original.st_uid, original.st_gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            written = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return _stamp(written)


class FileUserBackend:
    """Serve users from Authelia's YAML users file, optionally reloading it when it changes."""

    def __init__(
        self,
        config: FileBackendConfig,
        *,
        logger: logging.Logger | None = None,
        watch_interval: float = 1.0,
        verify: Callable[[str, str], bool] = verify_password,
    ) -> None:
        """Remember the configuration; nothing is read until startup_check or the first lookup."""
        self._config = config
        self._verify = verify  # one password against one hash (tests count the calls)
        self._path = str(config.path)
        self._logger = logger or logging.getLogger(__name__)
        self._watch_interval = watch_interval
        self._directory: _Directory | None = None
        self._reported: Mapping[str, str] = {}
        self._bad_stamp: Stamp | None = None
        self._missing_reported = False
        self._dummy: str | None = None
        self._dummy_lock = asyncio.Lock()
        self._lock = asyncio.Lock()  # serializes writes and reloads in this process
        self._watcher: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Future[None]] = set()

    # --- the UserBackend protocol -------------------------------------------------------------

    async def startup_check(self) -> None:
        """Load the file and check the hashing settings; start watching if configured."""
        async with self._lock:
            try:
                self._install(await asyncio.to_thread(self._load))
            except _LoadError as exc:
                raise StartupCheckError(str(exc)) from None
        try:
            await self._dummy_digest()
        except ValueError as exc:
            raise StartupCheckError(f"{WHERE}.password: {exc}") from None
        if self._config.watch and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name=f"watch {self._path}")

    async def close(self) -> None:
        """Stop watching the file and let password writes under way finish."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def get_user(self, identifier: str) -> User | None:
        """Find a user by username, or by email address when search.email is on."""
        directory = await self._current()
        username = self._resolve(directory, identifier)
        if username is None and self._config.search.email:
            username = self._resolve_email(directory, identifier)
        return directory.accounts[username].user if username is not None else None

    async def check_password(self, username: str, password: str) -> bool:
        """Return whether the password is the user's; False if unknown, disabled or locked."""
        directory = await self._current()
        name = self._resolve(directory, username)
        account = directory.accounts.get(name) if name is not None else None
        if account is None or account.user.disabled or not account.usable or not account.digest:
            # SECURITY: do the same work as for a real user, so timing does not tell who exists.
            await asyncio.to_thread(self._matches, password, await self._dummy_digest())
            return False
        return await asyncio.to_thread(self._matches, password, account.digest)

    async def set_password(self, username: str, password: str) -> None:
        """Hash the password and write it into the file; raise PasswordWriteError on failure."""
        name = self._resolve(await self._current(), username)
        if name is None:
            raise PasswordWriteError(f"users file {self._path}: no user {username!r}")
        try:
            digest = await asyncio.to_thread(
                lambda: hash_password(normalize_password(password), self._config.password)
            )
        except UnicodeError:
            # SECURITY: the codec's message would quote part of the password.
            raise PasswordWriteError(
                "the password contains characters that cannot be stored"
            ) from None
        except ValueError as exc:
            raise PasswordWriteError(str(exc)) from exc
        # Once the file is being written, a cancelled caller must not release the lock (or skip
        # updating the state) while the worker thread is still replacing the file.
        write = asyncio.ensure_future(self._locked_write(name, digest))
        self._writes.add(write)
        write.add_done_callback(self._forget_write)
        await asyncio.shield(write)

    def _matches(self, password: str, digest: str) -> bool:
        """Verify the normalized password, then (a hash from before) the typed one if it differs."""
        for candidate in password_candidates(password):
            try:
                if self._verify(candidate, digest):
                    return True
            except UnsupportedHashError:
                # SECURITY: a mismatch like any other, for the dummy hash too: known and unknown
                # users cost the same number of verifications.
                continue
        return False

    async def _locked_write(self, username: str, digest: str) -> None:
        async with self._lock:
            self._install(await asyncio.to_thread(self._write_password, username, digest))

    def _forget_write(self, write: asyncio.Future[None]) -> None:
        self._writes.discard(write)
        if not write.cancelled():
            write.exception()  # the caller, if still waiting, has it; nobody else needs it

    async def healthy(self) -> bool:
        """Tell whether a good copy of the users file is loaded."""
        return self._directory is not None

    async def password_state(self, username: str) -> str | None:
        """Return the user's stored hash ('' when none is set), or None for an unknown user."""
        directory = await self._current()
        name = self._resolve(directory, username)
        if name is None:
            return None
        return directory.accounts[name].digest or ""

    async def clear_lockout(self, username: str) -> bool:
        """Return False: the users file has no lockout (only `disabled`, an administrator's)."""
        return False

    # --- lookups -------------------------------------------------------------------------------

    def _unique(self, matches: tuple[str, ...], what: str) -> str | None:
        if len(matches) > 1:
            self._logger.warning(
                "users file %s: %s matches several users (%s); refusing to pick one",
                self._path,
                what,
                ", ".join(sorted(matches)),
            )
            return None
        return matches[0] if matches else None

    # SECURITY: with case_insensitive, names that fold alike are the same name: if two users
    # share one, the identifier names nobody (a reset mail must never reach the wrong user).

    def _resolve(self, directory: _Directory, identifier: str) -> str | None:
        """Return the canonical username the identifier names as a username, if any."""
        if not self._config.search.case_insensitive:
            return identifier if identifier in directory.accounts else None
        return self._unique(directory.by_folded_name.get(fold(identifier), ()), "a username")

    def _resolve_email(self, directory: _Directory, identifier: str) -> str | None:
        if self._config.search.case_insensitive:
            matches = directory.by_folded_email.get(fold(identifier), ())
        else:
            matches = directory.by_email.get(identifier, ())
        return self._unique(matches, "an email address")

    # --- loading and watching ------------------------------------------------------------------

    def _load(self) -> _Directory:
        """Read and index the file (in a worker thread); raise _LoadError naming the file."""
        return _read_directory(self._path)

    def _install(self, directory: _Directory) -> _Directory:
        """Make a freshly loaded version current and log each new per-user problem once."""
        for username, problem in directory.problems.items():
            if self._reported.get(username) != problem:
                self._logger.warning("users file %s: user %r: %s", self._path, username, problem)
        self._reported = directory.problems
        self._directory = directory
        self._bad_stamp = None
        self._missing_reported = False
        return directory

    async def _current(self) -> _Directory:
        """Return the loaded file, loading it first if startup_check has not run."""
        if self._directory is not None:
            return self._directory
        async with self._lock:
            if self._directory is not None:
                return self._directory
            try:
                return self._install(await asyncio.to_thread(self._load))
            except _LoadError as exc:
                raise UserBackendError(str(exc)) from None

    async def _dummy_digest(self) -> str:
        if self._dummy is None:
            async with self._dummy_lock:
                if self._dummy is None:
                    password = secrets.token_urlsafe(16)
                    config = self._config.password
                    self._dummy = await asyncio.to_thread(hash_password, password, config)
        return self._dummy

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._watch_interval)
            try:
                await self._reload_if_changed()
            except Exception:  # keep watching whatever went wrong this time
                self._logger.exception("users file %s: checking for changes failed", self._path)

    async def _reload_if_changed(self) -> None:
        async with self._lock:
            try:
                stamp = _stamp(await asyncio.to_thread(os.stat, self._path))
            except OSError as exc:
                if not self._missing_reported:
                    self._logger.warning(
                        "users file %s: cannot be read (%s); keeping the last good copy",
                        self._path,
                        exc.strerror,
                    )
                    self._missing_reported = True
                return
            self._missing_reported = False
            current = self._directory
            if (current is not None and stamp == current.stamp) or stamp == self._bad_stamp:
                return
            try:
                directory = await asyncio.to_thread(self._load)
            except _LoadError as exc:
                self._bad_stamp = exc.stamp or stamp
                self._logger.warning("%s; keeping the last good copy", exc)
                return
            self._install(directory)
            self._logger.info("users file %s: reloaded", self._path)

    # --- writing -------------------------------------------------------------------------------

    def _write_password(self, username: str, digest: str) -> _Directory:
        """Put the digest into the current file (in a worker thread); return the new version."""
        path = os.path.realpath(self._path)  # replace the file itself, not a symlink to it
        try:
            document, text, bom, st = _load_document(path)
        except _LoadError as exc:
            raise PasswordWriteError(f"{exc}; the password was not changed") from None
        try:
            users = _users_mapping(document)
        except _ShapeError as exc:
            raise PasswordWriteError(f"users file {path}: {exc}") from None
        entry = users.get(username)
        if not isinstance(entry, dict):
            raise PasswordWriteError(
                f"users file {path}: user {username!r} is no longer in the file (or not a mapping)"
            )
        new_text = _splice_password(text, username, digest)
        if isinstance(entry, CommentedMap) and "password" not in entry:
            # Where Authelia puts it; appending would land after the entry's trailing comments.
            keys = list(entry)
            position = keys.index("displayname") + 1 if "displayname" in keys else 0
            entry.insert(position, "password", _styled(digest, None))
        else:
            entry["password"] = _styled(digest, entry.get("password"))
        if new_text is None:
            new_text = _dump(document, text)
        if not _only_password_changed(text, new_text, username, digest):
            raise PasswordWriteError(
                f"users file {path}: could not change only {username!r}'s password; file untouched"
            )
        data = (codecs.BOM_UTF8 if bom else b"") + new_text.encode("utf-8")
        try:
            stamp = _replace_file(path, data, st)
        except OSError as exc:
            raise PasswordWriteError(
                f"users file {path}: cannot write the new password: {exc.strerror}"
            ) from None
        try:
            _fsync_directory(os.path.dirname(path) or ".")
        except OSError as exc:  # the rename is done; only its durability is in doubt
            self._logger.warning("users file %s: cannot sync its directory: %s", path, exc.strerror)
        try:
            return _directory(document, stamp)
        except _ShapeError as exc:  # cannot happen: the same document was checked above
            raise PasswordWriteError(f"users file {path}: {exc}") from None
