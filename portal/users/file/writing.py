"""Writing a new password into Authelia's users file: only that value, replaced atomically.

The password scalar is spliced in place when it is simple, else the round-trip document is
re-dumped in the file's own indentation; either way the result is checked to differ only in that
password before it replaces the file (write beside, fsync, rename, fsync the directory).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import logging
import os
import re
import stat
import tempfile
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from portal.errors import PasswordWriteError
from portal.users.file.document import (
    Directory,
    LoadError,
    ShapeError,
    Stamp,
    build_directory,
    load_document,
    round_trip_yaml,
    stamp_of,
    users_mapping,
)

_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN_DIGEST = re.compile(r"\$[$A-Za-z0-9./+=,-]*")


def write_password(path: str, username: str, digest: str, logger: logging.Logger) -> Directory:
    """Put the digest as the user's `password` in the file at path; return the new version.

    Only that value changes (byte for byte elsewhere when it can be spliced in place, else a
    re-dump checked to hold the same data); the file is replaced atomically, keeping its mode,
    owner and BOM. Raise PasswordWriteError (naming the file, never the hash) if it cannot be.
    """
    path = os.path.realpath(path)  # replace the file itself, not a symlink to it
    try:
        document, text, bom, st = load_document(path)
    except LoadError as exc:
        raise PasswordWriteError(f"{exc}; the password was not changed") from None
    try:
        users = users_mapping(document)
    except ShapeError as exc:
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
        logger.warning("users file %s: cannot sync its directory: %s", path, exc.strerror)
    try:
        return build_directory(document, stamp)
    except ShapeError as exc:  # cannot happen: the same document was checked above
        raise PasswordWriteError(f"users file {path}: {exc}") from None


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
    yaml = round_trip_yaml()
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
    return stamp_of(written)
