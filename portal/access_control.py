"""Access control: the level a request needs, by Authelia's `access_control` rules.

The auth_request verdict built on it (cookie domain, session, user, rule, sign-in URL) is
portal.authz.

Pure and precompiled: `AccessControl(config)` compiles every rule once; `decide(target, user)`
runs on nginx's hot path and only compares strings, sets, integers and precompiled regexes.

The semantics are Authelia's (authelia/authelia `internal/authorization/` and
`docs/content/configuration/security/access-control.md`):

- rules are tried in order; the first whose every criterion matches decides; none -> default_policy
  (access_control_rule.go `IsMatch`, authorizer.go `GetRequiredLevel`);
- domain: exact (case-insensitive), `*.example.com` = any subdomain at any depth but not the apex,
  `{user}.example.com` / `{group}.example.com` placeholders (access_control_domain.go); any port;
- domain_regex and resources: an unanchored regex *search* (Go's `MatchString`), so anchor with
  `^...$`, with Go's RE2 syntax and semantics, linear time (portal.patterns: `$` is the end of
  the text, never before a final newline); named groups `(?P<User>...)` / `(?P<Group>...)`
  compare case-insensitively with the username / groups (regexp.go
  `RegexpGroupStringSubjectMatcher`); resources see the cleaned, percent-decoded path plus
  `?query` when there is one (types.go `NewObject`, utils `URLPathFullClean`);
- methods: membership; networks: the client address in any CIDR (types.go `AccessControlNetworks`);
- subject: OR of ANDs; `user:` is a case-sensitive equality, `group:` a case-sensitive membership
  (access_control_subjects.go).

`two_factor` asks for a session proven by two factors (a password, then a code); which level a
session holds is portal.authz's business (authorization/util.go `IsAuthLevelSufficient`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal, NamedTuple
from urllib.parse import unquote_to_bytes, urlsplit

from portal.config import AccessControlConfig, AccessControlRule
from portal.patterns import GoPattern, go_text
from portal.users.base import User

Level = Literal["bypass", "one_factor", "two_factor", "deny"]

_LEVELS: dict[str, Level] = {
    "bypass": "bypass",
    "one_factor": "one_factor",
    "two_factor": "two_factor",
    "deny": "deny",
}
_SCHEMES = frozenset({"http", "https"})
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Authelia refuses a method with anything but letters and '-' (types.go hasInvalidMethodCharacters).
_METHOD = re.compile(r"[A-Za-z-]*")
# RFC 9110 section 9 and WebDAV's: letters only, so _METHOD would let them through too; known
# without running the regex (nginx's auth_request asks about one of these nearly always).
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PROPFIND"}
)


class Target(NamedTuple):
    """Describe what nginx asks about: the original URL, its method and the client's address.

    A named tuple: immutable, and cheaper to make than a frozen dataclass (one per request)."""

    scheme: str
    host: str
    port: int | None
    path: str  # percent-decoded and cleaned ('.', '..', '//' resolved), as rules see it
    query: str  # raw, as sent
    method: str
    ip: IPv4Address | IPv6Address

    @property
    def resource(self) -> str:
        """Return what `resources` patterns search: the path, plus `?query` when there is one."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @classmethod
    def from_url(cls, url: str, method: str, ip: str | IPv4Address | IPv6Address) -> Target:
        """Parse nginx's X-Original-URL, method and client IP; raise ValueError if malformed."""
        return cls.from_parts(parse_url(url), method, ip)

    @classmethod
    def from_parts(
        cls, parts: UrlParts, method: str, ip: str | IPv4Address | IPv6Address
    ) -> Target:
        """Build a target from a parsed URL, a method and an IP; raise ValueError if malformed."""
        if method not in _KNOWN_METHODS and not _METHOD.fullmatch(method):
            raise ValueError(f"not an HTTP method: {method!r}")
        address = ip_address(ip) if isinstance(ip, str) else ip
        # Go's IPNet.Contains sees ::ffff:192.0.2.1 as 192.0.2.1; so do we.
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        scheme, host, port, path, query = parts
        return cls(scheme, host, port, path, query, method.upper(), address)


UrlParts = tuple[str, str, int | None, str, str]  # scheme, host, port, cleaned path, raw query


def parse_url(url: str) -> UrlParts:
    """Split nginx's X-Original-URL as rules see it; raise ValueError if it is malformed."""
    # SECURITY: a header nginx built never holds whitespace or control characters; urlsplit
    # would silently drop some of them, so refuse rather than guess what was meant.
    if _UNSAFE_CHARACTERS.search(url):
        raise ValueError("the URL holds whitespace or control characters")
    # Like Go's url.ParseRequestURI, which Authelia uses: a '#' is not a fragment separator.
    parts = urlsplit(url, allow_fragments=False)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    # SECURITY: 'https://bypass.example.com@secret.example.com/' names one host to nginx's
    # server_name matching and another to a URL parser; nginx never sends user info.
    if "@" in parts.netloc:
        raise ValueError("the URL must not carry user info")
    # SECURITY: nginx drops a trailing dot before matching server_name, so must we, or
    # 'secret.example.com.' would escape the rule for 'secret.example.com'.
    host = (parts.hostname or "").removesuffix(".")
    if not host:
        raise ValueError(f"the URL has no host: {url!r}")
    port = parts.port  # raises ValueError for a port that is not a number in range
    if _BAD_ESCAPE.search(parts.path):
        raise ValueError("the URL path has an invalid percent escape")
    # Go's url.URL.Path: the percent-decoded bytes, whatever they are; bytes that are not UTF-8
    # stay one surrogate each (Python's unquote would fold a bad sequence into one U+FFFD).
    path = unquote_to_bytes(parts.path.encode("utf-8", "surrogateescape"))
    return scheme, host, port, clean_path(path.decode("utf-8", "surrogateescape")), parts.query


def clean_path(path: str) -> str:
    """Resolve '.', '..' and empty segments as Go's path.Clean, keeping a trailing slash."""
    # SECURITY: '/public/../admin' must be judged as '/admin', which is what the backend serves
    # (Authelia: utils.URLPathFullClean over the decoded url.URL.Path).
    if "//" not in path and "/." not in path:
        return path or "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    cleaned = "/" + "/".join(segments)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


@dataclass(frozen=True)
class Decision:
    """Say which level a request needs and which rule said so (None: the default policy)."""

    required: Level
    rule: int | None


@dataclass(frozen=True, slots=True)
class _Identity:
    """The signed-in user, folded once per request for the comparisons rules make."""

    username: str
    groups: frozenset[str]
    username_folded: str
    groups_folded: frozenset[str]

    @classmethod
    def of(cls, user: User) -> _Identity:
        return cls(
            username=user.username,
            groups=frozenset(user.groups),
            username_folded=user.username.casefold(),
            groups_folded=frozenset(g.casefold() for g in user.groups),
        )


@dataclass(frozen=True, slots=True)
class _Pattern:
    """A precompiled domain_regex or resource, with the index of its User/Group groups if any."""

    compiled: GoPattern
    user_group: int | None
    group_group: int | None

    @classmethod
    def compile(cls, pattern: str) -> _Pattern:
        compiled = GoPattern.compile(pattern)
        user = group = None
        # Authelia walks SubexpNames and keeps the last index of each name
        # (access_control_domain.go `NewAccessControlDomainRegex`).
        for index, name in enumerate(compiled.subexp_names):
            if name == "User":
                user = index
            elif name == "Group":
                group = index
        return cls(compiled, user, group)

    @property
    def needs_identity(self) -> bool:
        return self.user_group is not None or self.group_group is not None

    def matches(self, text: bytes, who: _Identity | None) -> bool:
        """Search text (from go_text) as Go's regexp: RE2, linear time, `$` at the very end."""
        found = self.compiled.search(text)
        if found is None:
            return False
        # Anonymous: a potential match; the caller asks for a sign-in (regexp.go).
        if who is None:
            return True
        if self.user_group is not None:
            value = (found.group(self.user_group) or b"").decode(errors="replace")
            if value.casefold() != who.username_folded:
                return False
        if self.group_group is not None:
            value = (found.group(self.group_group) or b"").decode(errors="replace")
            if value.casefold() not in who.groups_folded:
                return False
        return True


@dataclass(frozen=True, slots=True)
class _Clause:
    """One AND of a subject: every user: item equals the username, every group: is held."""

    users: frozenset[str]
    groups: frozenset[str]

    @classmethod
    def of(cls, items: tuple[str, ...]) -> _Clause:
        # Authelia trims spaces around the name (util.go schemaSubjectToACLSubject).
        return cls(
            users=frozenset(i[5:].strip(" ") for i in items if i.startswith("user:")),
            groups=frozenset(i[6:].strip(" ") for i in items if i.startswith("group:")),
        )

    def matches(self, who: _Identity) -> bool:
        return all(u == who.username for u in self.users) and self.groups <= who.groups


@dataclass(frozen=True, slots=True)
class _Rule:
    """One access_control rule, compiled."""

    exact: frozenset[str]
    wildcards: tuple[str, ...]  # '.example.com' for '*.example.com'
    user_suffixes: tuple[str, ...]  # '.example.com' for '{user}.example.com'
    group_suffixes: tuple[str, ...]  # '.example.com' for '{group}.example.com'
    domain_patterns: tuple[_Pattern, ...]
    resources: tuple[_Pattern, ...]
    methods: frozenset[str]
    networks: tuple[tuple[int, int, int], ...]  # (version, network as int, netmask as int)
    subjects: tuple[_Clause, ...]
    has_subjects: bool
    signed_in: Decision
    anonymous: Decision

    @classmethod
    def compile(cls, index: int, rule: AccessControlRule) -> _Rule:
        exact: set[str] = set()
        wildcards: list[str] = []
        user_suffixes: list[str] = []
        group_suffixes: list[str] = []
        for domain in rule.domain:  # already lower-cased by the configuration
            if domain.startswith("*."):
                wildcards.append(domain[1:])
            elif domain.startswith("{user}"):
                user_suffixes.append(domain[len("{user}") :])
            elif domain.startswith("{group}"):
                group_suffixes.append(domain[len("{group}") :])
            else:
                exact.add(domain)
        domain_patterns = tuple(_Pattern.compile(p) for p in rule.domain_regex)
        resources = tuple(_Pattern.compile(p) for p in rule.resources)
        # Authelia drops an empty AND (util.go schemaSubjectsToACL).
        clauses = tuple(_Clause.of(items) for items in rule.subject if items)
        # A rule is subject-reliant when it has a subject, a {user}/{group} domain or a
        # User/Group named group (util.go ruleAddDomain / ruleAddDomainRegex / ruleAddResources).
        has_subjects = bool(
            clauses
            or user_suffixes
            or group_suffixes
            or any(p.needs_identity for p in (*domain_patterns, *resources))
        )
        level = _LEVELS[rule.policy]
        # Authelia, anonymous request, subject-reliant rule: access_control_rule.go
        # `MatchesSubjects` counts the rule as matched (a "potential match", types.go
        # `IsPotentialMatch`), `GetRequiredLevel` returns it with hasSubjects=true, and
        # handler_authz_util.go `isAuthzResult` then answers Unauthorized (sign in) for
        # one_factor, two_factor and deny alike: who the visitor is decides whether the rule
        # applies, so they must sign in before a later rule (a bypass, say) may be considered.
        # Once signed in, the subject is checked exactly. Authelia refuses bypass with a subject
        # at start-up ("Rule Matching Concept 2"); the portal's configuration does not, so such
        # a rule also asks an anonymous visitor to sign in rather than letting them through.
        anonymous: Level = "one_factor" if has_subjects else level
        return cls(
            exact=frozenset(exact),
            wildcards=tuple(wildcards),
            user_suffixes=tuple(user_suffixes),
            group_suffixes=tuple(group_suffixes),
            domain_patterns=domain_patterns,
            resources=resources,
            methods=frozenset(rule.methods),
            networks=tuple(
                (n.version, int(n.network_address), int(n.netmask)) for n in rule.networks
            ),
            subjects=clauses,
            has_subjects=has_subjects,
            signed_in=Decision(level, index),
            anonymous=Decision(anonymous, index),
        )

    def matches_domain(self, host: str, host_text: bytes, who: _Identity | None) -> bool:
        if host in self.exact:
            return True
        for suffix in self.wildcards:
            if host.endswith(suffix):
                return True
        for suffix in self.user_suffixes:
            if who is None:
                # Potential match: some user's site (access_control_domain.go).
                if host.endswith(suffix) and len(host) > len(suffix):
                    return True
            elif host == who.username_folded + suffix:
                return True
        for suffix in self.group_suffixes:
            if who is None:
                if host.endswith(suffix) and len(host) > len(suffix):
                    return True
                continue
            dot = host.find(".")
            if dot > 0 and host[dot:] == suffix and host[:dot] in who.groups_folded:
                return True
        return any(p.matches(host_text, who) for p in self.domain_patterns)

    def matches_network(self, version: int, address: int) -> bool:
        for net_version, network, netmask in self.networks:
            if net_version == version and address & netmask == network:
                return True
        return False


# URLs up to this long have their parsed parts remembered; the memo holds at most _MEMO_SIZE.
_MEMO_URL_LIMIT = 2048
_MEMO_SIZE = 4096


class AccessControl:
    """Decide the level each request needs, from rules compiled once."""

    def __init__(self, config: AccessControlConfig) -> None:
        """Compile every rule's domains, regexes, networks and subjects."""
        # nginx asks about the same URLs again and again (every asset of every page view):
        # each is split and cleaned once, then remembered, within a bounded memo.
        self._urls: dict[str, UrlParts] = {}
        self._rules = tuple(_Rule.compile(i, r) for i, r in enumerate(config.rules))
        self._default = Decision(_LEVELS[config.default_policy], None)
        self._needs_identity = any(r.has_subjects for r in self._rules)
        # Authelia's Authorizer.IsSecondFactorEnabled: some rule, or the default, asks for two.
        self.second_factor_enabled = config.default_policy == "two_factor" or any(
            r.policy == "two_factor" for r in config.rules
        )

    def target(self, url: str, method: str, ip: str | IPv4Address | IPv6Address) -> Target:
        """Parse what nginx asks about, like Target.from_url, remembering recent URLs."""
        parts = self._urls.get(url)
        if parts is None:
            parts = parse_url(url)
            if len(url) <= _MEMO_URL_LIMIT:
                if len(self._urls) >= _MEMO_SIZE:
                    self._urls.clear()
                self._urls[url] = parts
        return Target.from_parts(parts, method, ip)

    def decide(self, target: Target, user: User | None) -> Decision:
        """Return the level the first matching rule (or the default policy) requires."""
        host = target.host
        method = target.method
        # SECURITY: patterns see the bytes Go's regexp would see (portal.patterns.go_text).
        host_text = go_text(host)
        resource = go_text(target.resource)
        version = target.ip.version
        address = int(target.ip)
        who = _Identity.of(user) if user is not None and self._needs_identity else None
        anonymous = user is None
        for rule in self._rules:
            if rule.methods and method not in rule.methods:
                continue
            if not rule.matches_domain(host, host_text, who):
                continue
            if rule.networks and not rule.matches_network(version, address):
                continue
            if rule.resources and not any(p.matches(resource, who) for p in rule.resources):
                continue
            if anonymous:
                return rule.anonymous
            # `who` is built whenever a rule has subjects; None here can only fail closed.
            if rule.subjects and (who is None or not any(c.matches(who) for c in rule.subjects)):
                continue
            return rule.signed_in
        return self._default


class DomainMatcher:
    """Match a host against `domain` patterns read exactly as access_control's `domain`.

    DomainMatcher(domains): exact names, `*.example.com` (any subdomain, not the apex),
    `{user}.example.com` and `{group}.example.com`; `matches(host, user)` compares as a rule's
    domain criterion does (the same compiled code, _Rule.matches_domain).
    """

    def __init__(self, domains: tuple[str, ...]) -> None:
        """Compile the patterns (already lower-cased by the configuration)."""
        self._rule = _Rule.compile(0, AccessControlRule(domain=domains, policy="bypass"))

    def matches(self, host: str, user: User) -> bool:
        """Tell whether host (lower-case, as Target.host) is one of the domains for user."""
        return self._rule.matches_domain(host, go_text(host), _Identity.of(user))
