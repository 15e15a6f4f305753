r"""Admin-written regular expressions (access_control domain_regex and resources), read as Go does.

Authelia compiles these with Go's `regexp` package: RE2 syntax, leftmost-first matching in time
linear in the text, `$` at the end of the text only (unless `(?m)`), `.` never a newline (unless
`(?s)`), ASCII `\w \d \s \b`, `\z` for the end of the text (no `\Z`), no backreferences and no
lookaround (RE2 syntax: github.com/google/re2/wiki/Syntax; Go: pkg.go.dev/regexp/syntax). The
portal compiles them with google-re2 (`import re2`), the C++ RE2 that Go's package was ported
from: same syntax, same answers, same linear time. Python's `re` would differ on all of it, and
backtracks: `^(a+)+$` against 50 'a's and a '!' never returns.

Where C++ RE2 and Go differ, the portal does what Go does:

- C++ RE2 takes `\C` (one byte, even inside a character) and any group name; Go refuses `\C`
  and names other than ASCII letters, digits and '_' (parse.go `isValidCaptureName`): refused;
- Go reads text that is not UTF-8 one byte at a time, each byte as U+FFFD, where C++ RE2 lets such
  a byte match nothing: `go_text` gives RE2 the text as Go's regexp reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import re2

# Lone surrogates: the bytes aiohttp (surrogateescape) or the portal's own percent-decoding could
# not read as UTF-8, one surrogate per byte.
_NOT_UTF8 = re.compile("[\ud800-\udfff]")
# Go's isValidCaptureName (regexp/syntax/parse.go).
_GO_GROUP_NAME = re.compile("[A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class GoPattern:
    """A compiled admin-written pattern, with the name of every group as Go's SubexpNames."""

    regex: re2._Regexp[str]
    # Index 0 is the whole match; unnamed groups are "" (Go's Regexp.SubexpNames).
    subexp_names: tuple[str, ...]

    @classmethod
    def compile(cls, pattern: str) -> GoPattern:
        """Compile pattern as Go's regexp.Compile; raise ValueError saying why Go refuses it."""
        options = re2.Options()
        options.log_errors = False  # the reason goes into the ValueError, not to stderr
        try:
            regex = re2.compile(pattern, options)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "invalid pattern"
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            if str(reason).endswith("\\Z"):
                reason = f"{reason} (Go ends the text with \\z)"
            raise ValueError(str(reason)) from None
        names = _subexp_names(pattern)
        for name in names[1:]:
            if name and not _GO_GROUP_NAME.fullmatch(name):
                raise ValueError(
                    f"invalid named capture {name!r} (Go allows letters, digits and '_')"
                )
        # SECURITY: the names are read from the pattern's text; if that reading and RE2's own
        # ever disagree, a User/Group group could be read from the wrong place: refuse instead.
        if len(names) != regex.groups + 1 or any(
            names.index(name) != index for name, index in regex.groupindex.items()
        ):
            raise ValueError("the groups of this pattern cannot be told apart")
        return cls(regex, tuple(names))

    def search(self, text: bytes) -> re2._Match[bytes] | None:
        """Return the leftmost-first match anywhere in text (Go's FindSubmatch), or None."""
        return self.regex.search(text)


def go_text(text: str) -> bytes:
    """Return text as the UTF-8 that Go's regexp reads: each byte that was not UTF-8 as U+FFFD."""
    if text.isascii():
        return text.encode("ascii")
    return _NOT_UTF8.sub("\ufffd", text).encode("utf-8")


def _subexp_names(pattern: str) -> list[str]:
    r"""Return "" then the name of each capturing group in order ("" when unnamed).

    Only for a pattern RE2 has accepted: it never ends in a lone '\' nor leaves a class open.
    Raise ValueError for `\C`, which Go refuses.
    """
    names = [""]
    i, end = 0, len(pattern)
    while i < end:
        char = pattern[i]
        if pattern.startswith("\\Q", i):  # literal up to the first \E, or to the end
            close = pattern.find("\\E", i + 2)
            i = end if close < 0 else close + 2
        elif char == "\\":
            if pattern.startswith("C", i + 1):
                raise ValueError("\\C (any byte) is not in Go's syntax")
            i += 2
        elif char == "[":
            i = _class_end(pattern, i)
        elif pattern.startswith(("(?P<", "(?<"), i):
            start = pattern.find("<", i) + 1
            close = pattern.find(">", start)
            if close < 0:  # not for a pattern RE2 accepted; the caller's check refuses it
                return names
            names.append(pattern[start:close])
            i = close + 1
        elif char == "(" and not pattern.startswith("(?", i):
            names.append("")
            i += 1
        else:
            i += 1
    return names


def _class_end(pattern: str, i: int) -> int:
    """Return the index just past the character class that opens at pattern[i]."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):  # a ']' first in the class is a literal
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        if pattern[j] == "\\":
            j += 2
        elif pattern.startswith("[:", j) and pattern.find(":]", j + 2) >= 0:
            j = pattern.find(":]", j + 2) + 2  # [:alpha:]; RE2 refused any unknown name
        else:
            j += 1
    return j + 1
