"""Every listed user's groups from one groups search (`portal users list`), not one per user.

get_user searches groups_filter filled with one user's values. For a list, the portal searches
once for the groups any listed user can be in, and sorts them out by user itself, where that
gives exactly what the per-user searches would:

- group_search_mode `filter` (Authelia's default): groups_filter is an AND (or a single term)
  whose one child naming the user is `(attr={dn})`, or an OR of such terms (rfc2307bis's
  `(|(member={dn})(uniqueMember={dn}))`), and nothing else names the user ({input},
  {username}). The search asks for that child made a presence test, `(attr=*)`, with the
  member attributes; a group is a user's when one of its member values is the user's DN
  (compared as DNs, as the server's distinguishedNameMatch does, see same_dn_key).
- group_search_mode `memberof`: groups_filter names the user only through {memberof:dn} or
  {memberof:rdn}. The search fills them with every listed user's memberOf DNs (in batches of
  MEMBEROF_BATCH) and a group is a user's when its DN is one of the user's memberOf values, the
  rule get_user applies too.

Any other shape (a matching-rule term such as Active Directory's `member:1.2.840.113556.1.4.1941:`,
a user term inside an OR with other terms, {username}) returns None here: the caller searches per
user, as before.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from portal.users.ldap.connection import Entry
from portal.users.ldap.settings import (
    Settings,
    fill_filter,
    is_dn,
    memberof_fragments,
    same_dn_key,
)

# Runs one paged groups search (filter, attributes) under groups_base: its entries, in order.
GroupSearch = Callable[[str, list[str]], Awaitable[list[Entry]]]

# Placeholders that name one user in groups_filter.
USER_PLACEHOLDERS = ("{input}", "{username}", "{dn}")
MEMBEROF_PLACEHOLDERS = ("{memberof:dn}", "{memberof:rdn}")
# memberOf DNs per groups search in memberof mode: keeps each filter a few tens of kilobytes.
MEMBEROF_BATCH = 500
_MEMBER_TERM = re.compile(r"\(([A-Za-z][A-Za-z0-9-]*)=\{dn\}\)")


def _children(text: str) -> list[str] | None:
    """Split `(a)(b)...` into its top-level parenthesised parts; None if it is not just that.
    (A filter's own parentheses are never escaped characters: RFC 4515 writes them \\28 \\29.)"""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            if depth == 0:
                start = index
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                parts.append(text[start : index + 1])
        elif depth == 0 and not char.isspace():
            return None
    return parts if depth == 0 else None


def _member_attributes(term: str) -> tuple[str, ...] | None:
    """Return the attributes of `(attr={dn})` or `(|(a={dn})(b={dn})...)`, else None."""
    single = _MEMBER_TERM.fullmatch(term)
    if single:
        return (single.group(1),)
    if not term.startswith("(|") or not term.endswith(")"):
        return None
    inner = _children(term[2:-1])
    if not inner:
        return None
    matches = [_MEMBER_TERM.fullmatch(part) for part in inner]
    if not all(matches):
        return None
    return tuple(dict.fromkeys(m.group(1) for m in matches if m))


def member_filter(groups_filter: str) -> tuple[str, tuple[str, ...]] | None:
    """Return (groups_filter with its member term made a presence test, the member attributes)
    when groups_filter has the `filter`-mode shape described in the module, else None."""
    text = groups_filter.strip()
    wrapped = text.startswith("(&") and text.endswith(")")
    parts = _children(text[2:-1]) if wrapped else [text]
    if not parts:
        return None
    placeholders = USER_PLACEHOLDERS + MEMBEROF_PLACEHOLDERS
    naming = [i for i, part in enumerate(parts) if any(p in part for p in placeholders)]
    if len(naming) != 1:
        return None
    attributes = _member_attributes(parts[naming[0]])
    if attributes is None:
        return None
    tests = [f"({attribute}=*)" for attribute in attributes]
    presence = tests[0] if len(tests) == 1 else f"(|{''.join(tests)})"
    parts[naming[0]] = presence
    return (f"(&{''.join(parts)})" if wrapped else presence), attributes


def memberof_batchable(groups_filter: str) -> bool:
    """Tell whether a memberof-mode groups_filter names the user only through {memberof:*}."""
    return not any(p in groups_filter for p in USER_PLACEHOLDERS)


def is_ranged(groups: Iterable[Entry], attributes: Sequence[str]) -> bool:
    """Tell whether a group's member values came in ranges (Active Directory sends a group of
    more than MaxValRange members as `member;range=0-1499`): those need the per-user search."""
    prefixes = tuple(f"{attribute.lower()};range=" for attribute in attributes)
    return any(name.startswith(prefixes) for group in groups for name in group.raw)


def groups_by_member(
    groups: Sequence[Entry], attributes: Sequence[str]
) -> dict[tuple[tuple[str, str], ...] | str, list[int]]:
    """Index groups by the DN key (same_dn_key) of each member value: positions, in order."""
    index: dict[tuple[tuple[str, str], ...] | str, list[int]] = {}
    for position, group in enumerate(groups):
        keys = {same_dn_key(v) for attribute in attributes for v in group.values(attribute)}
        for key in keys:
            index.setdefault(key, []).append(position)
    return index


def batches(items: Sequence[str], size: int = MEMBEROF_BATCH) -> list[Sequence[str]]:
    """Split items into runs of at most size."""
    return [items[start : start + size] for start in range(0, len(items), size)]


async def groups_of_all(
    s: Settings, entries: Sequence[Entry], search: GroupSearch
) -> dict[str, tuple[str, ...]] | None:
    """Return {entry DN: its groups' names} for every entry from one groups search (in batches
    in memberof mode), or None when groups_filter needs one search per user (see the module).
    The names are the ones the user's own search finds, in the same order. Raises what search
    raises."""
    if not s.groups_filter:
        return {entry.dn: () for entry in entries}
    now = datetime.now(UTC)
    if s.group_search_mode == "memberof":
        if not memberof_batchable(s.groups_filter):
            return None
        # A value that is not a DN can name no entry: it counts as no value (as per user).
        mine = {e.dn: [dn for dn in e.values(s.member_of) if is_dn(dn)] for e in entries}
        every = list({same_dn_key(dn): dn for dns in mine.values() for dn in dns}.values())
        found: dict[Any, Entry] = {}
        for batch in batches(every):
            fragments = memberof_fragments(batch, s.distinguished_name)
            filled = fill_filter(s.groups_filter, {}, now, fragments)
            for group in await search(filled, [s.group_name]):
                found.setdefault(same_dn_key(group.dn), group)
        # In the order the server found them, as the user's own search lists them.
        order = {key: position for position, key in enumerate(found)}
        return {
            dn: _names(s, [found[k] for k in sorted(_keys(dns, found), key=order.__getitem__)])
            for dn, dns in mine.items()
        }
    shape = member_filter(s.groups_filter)
    if shape is None:
        return None
    template, attributes = shape
    groups = await search(fill_filter(template, {}, now), [s.group_name, *attributes])
    if is_ranged(groups, attributes):
        return None
    index = groups_by_member(groups, attributes)
    return {
        entry.dn: _names(s, [groups[i] for i in index.get(same_dn_key(entry.dn), ())])
        for entry in entries
    }


def _keys(dns: list[str], found: Mapping[Any, Entry]) -> set[Any]:
    """Return the DN keys of dns that name a group in found."""
    return {key for key in map(same_dn_key, dns) if key in found}


def _names(s: Settings, groups: Iterable[Entry]) -> tuple[str, ...]:
    """Return the group_name values of groups, in order, each once."""
    return tuple(dict.fromkeys(n for group in groups for n in group.values(s.group_name)))
