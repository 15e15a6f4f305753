"""Access control: Authelia's rule semantics over (url, method, ip, user), precompiled once."""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
import re2

from portal.access_control import AccessControl, Decision, Target, clean_path
from portal.config import AccessControlConfig, read_config
from portal.users.base import User
from tests.conftest import FIXTURES, JWT_SECRET

# The test users (tests/fixtures/users.yml).
JOHN = User("john", "John Doe", ("john.doe@authelia.com",), ("admins", "dev"))
HARRY = User("harry", "Harry Potter", ("harry.potter@authelia.com",), ())
BOB = User("bob", "Bob Dylan", ("bob.dylan@authelia.com",), ("dev",))
ANONYMOUS = None


def access(*rules: dict[str, Any], default: str = "deny") -> AccessControl:
    """Build an AccessControl from rules written as in the YAML."""
    config = AccessControlConfig.model_validate({"default_policy": default, "rules": list(rules)})
    return AccessControl(config)


def target(
    url: str = "https://app.example.com/", method: str = "GET", ip: str = "192.0.2.10"
) -> Target:
    """Build the Target nginx would ask about."""
    return Target.from_url(url, method, ip)


def required(acl: AccessControl, url: str, user: User | None = JOHN, **kw: str) -> str:
    """Return only the level the request needs."""
    return acl.decide(target(url, **kw), user).required


# --- Target.from_url ---------------------------------------------------------------------------


def test_from_url_splits_the_original_url() -> None:
    t = Target.from_url("HTTPS://App.Example.COM:8443/a/b?x=1&y=2", "get", "192.0.2.1")

    assert t == Target(
        scheme="https",
        host="app.example.com",
        port=8443,
        path="/a/b",
        query="x=1&y=2",
        method="GET",
        ip=IPv4Address("192.0.2.1"),
    )
    assert t.resource == "/a/b?x=1&y=2"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "ftp://x",
        "/relative/path",
        "relative/path",
        "//example.com/no-scheme",
        "https://",
        "https:///path-only",
        "https://example.com:99999/",
        "https://example.com:port/",
        "https://[::1/",
        "https://example.com/with space",
        "https://example.com/\ttab",
        "https://bypass.example.com@secret.example.com/",
        "https://example.com/bad%zzescape",
    ],
)
def test_from_url_refuses_garbage(url: str) -> None:
    with pytest.raises(ValueError):
        Target.from_url(url, "GET", "192.0.2.1")


@pytest.mark.parametrize("ip", ["", "not-an-ip", "300.1.1.1", "192.0.2.1/24"])
def test_from_url_refuses_a_bad_client_address(ip: str) -> None:
    with pytest.raises(ValueError):
        Target.from_url("https://example.com/", "GET", ip)


@pytest.mark.parametrize("method", ["GE T", "GET\r\n", "G/T"])
def test_from_url_refuses_a_method_that_is_not_a_token(method: str) -> None:
    with pytest.raises(ValueError):
        Target.from_url("https://example.com/", method, "192.0.2.1")


@pytest.mark.parametrize("method", ["MKCOL", "M-SEARCH", "purge", "get"])
def test_from_url_reads_any_method_of_letters_and_dashes_as_authelia(method: str) -> None:
    # The usual methods skip the regex; the others are still read by Authelia's rule.
    assert Target.from_url("https://example.com/", method, "192.0.2.1").method == method.upper()


def test_from_url_resolves_dot_segments_after_decoding_as_authelia() -> None:
    t = Target.from_url("https://example.com/public/%2e%2e/admin/./x//y/?q=1", "GET", "192.0.2.1")

    assert (t.path, t.resource) == ("/admin/x/y/", "/admin/x/y/?q=1")


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("", "/"),
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/../../etc", "/etc"),
        ("//a///b", "/a/b"),
        ("/a/./b/../c", "/a/c"),
        ("/a/..", "/"),
        ("/a/../", "/"),
    ],
)
def test_clean_path_behaves_as_gos_path_clean_keeping_a_trailing_slash(
    raw: str, cleaned: str
) -> None:
    assert clean_path(raw) == cleaned


def test_from_url_strips_the_trailing_dot_nginx_ignores() -> None:
    assert Target.from_url("https://secret.example.com./", "GET", "192.0.2.1").host == (
        "secret.example.com"
    )


def test_from_url_reads_an_ipv4_mapped_ipv6_client_as_ipv4() -> None:
    t = Target.from_url("https://example.com/", "GET", "::ffff:192.0.2.7")

    assert t.ip == IPv4Address("192.0.2.7")
    assert Target.from_url("https://example.com/", "GET", "2001:db8::1").ip == IPv6Address(
        "2001:db8::1"
    )


# --- domains -----------------------------------------------------------------------------------


def test_exact_domain_matches_case_insensitively_and_on_any_port() -> None:
    acl = access({"domain": "App.Example.com", "policy": "bypass"})

    assert required(acl, "https://app.example.com/") == "bypass"
    assert required(acl, "https://APP.EXAMPLE.COM:8443/x") == "bypass"
    assert required(acl, "http://app.example.com:80/") == "bypass"
    assert required(acl, "https://other.example.com/") == "deny"
    assert required(acl, "https://app.example.com.evil.net/") == "deny"


def test_wildcard_domain_matches_subdomains_at_any_depth_but_not_the_apex() -> None:
    acl = access({"domain": "*.example.com", "policy": "bypass"})

    assert required(acl, "https://a.example.com/") == "bypass"
    assert required(acl, "https://a.b.c.example.com/") == "bypass"
    assert required(acl, "https://A.Example.Com/") == "bypass"
    assert required(acl, "https://example.com/") == "deny"
    assert required(acl, "https://badexample.com/") == "deny"
    assert required(acl, "https://a.example.com.evil.net/") == "deny"


def test_any_of_several_domains_matches() -> None:
    acl = access({"domain": ["one.example.com", "two.example.com"], "policy": "bypass"})

    assert required(acl, "https://two.example.com/") == "bypass"
    assert required(acl, "https://three.example.com/") == "deny"


def test_domain_regex_searches_the_host_as_authelia() -> None:
    acl = access({"domain_regex": r"^(\d+-)?priv-img\.example\.com$", "policy": "bypass"})

    assert required(acl, "https://priv-img.example.com/") == "bypass"
    assert required(acl, "https://42-priv-img.example.com/") == "bypass"
    assert required(acl, "https://x-priv-img.example.com/") == "deny"


def test_unanchored_domain_regex_matches_anywhere_in_the_host_as_gos_matchstring() -> None:
    acl = access({"domain_regex": r"internal", "policy": "deny"}, default="bypass")

    assert required(acl, "https://internal.example.com/") == "deny"
    assert required(acl, "https://app.internal.example.com/") == "deny"
    assert required(acl, "https://www.example.com/") == "bypass"


def test_domain_or_domain_regex_either_matches() -> None:
    acl = access(
        {
            "domain": "apple.example.com",
            "domain_regex": r"^(pub|img)-data\.example\.com$",
            "policy": "bypass",
        }
    )

    assert required(acl, "https://apple.example.com/") == "bypass"
    assert required(acl, "https://img-data.example.com/") == "bypass"
    assert required(acl, "https://doc-data.example.com/") == "deny"


# --- resources, methods, networks --------------------------------------------------------------


def test_resources_search_the_path() -> None:
    acl = access(
        {"domain": "app.example.com", "resources": [r"^/api([/?].*)?$"], "policy": "bypass"}
    )

    assert required(acl, "https://app.example.com/api") == "bypass"
    assert required(acl, "https://app.example.com/api/users") == "bypass"
    assert required(acl, "https://app.example.com/apiary") == "deny"
    assert required(acl, "https://app.example.com/v1/api") == "deny"


def test_resources_see_the_query_when_there_is_one() -> None:
    acl = access({"domain": "app.example.com", "resources": [r"^/api\?"], "policy": "bypass"})

    assert required(acl, "https://app.example.com/api?token=1") == "bypass"
    assert required(acl, "https://app.example.com/api") == "deny"


def test_resources_match_the_query_string_too() -> None:
    acl = access(
        {"domain": "app.example.com", "resources": [r"[?&]public=1(&|$)"], "policy": "bypass"}
    )

    assert required(acl, "https://app.example.com/files?public=1") == "bypass"
    assert required(acl, "https://app.example.com/files?public=10") == "deny"
    assert required(acl, "https://app.example.com/files") == "deny"


def test_resources_judge_the_cleaned_path_so_dot_segments_cannot_climb_out() -> None:
    acl = access(
        {"domain": "app.example.com", "resources": [r"^/public/"], "policy": "bypass"},
        {"domain": "app.example.com", "policy": "one_factor"},
    )

    assert required(acl, "https://app.example.com/public/x", ANONYMOUS) == "bypass"
    assert required(acl, "https://app.example.com/public/../admin", ANONYMOUS) == "one_factor"
    assert required(acl, "https://app.example.com/public/%2E%2E/admin", ANONYMOUS) == "one_factor"


def test_methods_restrict_a_rule_to_those_methods() -> None:
    acl = access(
        {"domain": "app.example.com", "methods": ["OPTIONS", "head"], "policy": "bypass"},
        {"domain": "app.example.com", "policy": "one_factor"},
    )

    assert required(acl, "https://app.example.com/", ANONYMOUS, method="OPTIONS") == "bypass"
    assert required(acl, "https://app.example.com/", ANONYMOUS, method="head") == "bypass"
    assert required(acl, "https://app.example.com/", ANONYMOUS, method="GET") == "one_factor"


def test_networks_match_ipv4_clients_in_any_cidr() -> None:
    acl = access(
        {
            "domain": "app.example.com",
            "networks": ["10.0.0.0/8", "192.168.1.7"],
            "policy": "bypass",
        },
    )

    assert required(acl, "https://app.example.com/", ip="10.20.30.40") == "bypass"
    assert required(acl, "https://app.example.com/", ip="192.168.1.7") == "bypass"
    assert required(acl, "https://app.example.com/", ip="192.168.1.8") == "deny"
    assert required(acl, "https://app.example.com/", ip="11.0.0.1") == "deny"
    assert required(acl, "https://app.example.com/", ip="::ffff:10.1.2.3") == "bypass"
    assert required(acl, "https://app.example.com/", ip="2001:db8::1") == "deny"


def test_an_ipv4_network_never_contains_an_ipv6_client() -> None:
    acl = access({"domain": "app.example.com", "networks": ["0.0.0.0/0"], "policy": "bypass"})

    assert required(acl, "https://app.example.com/", ip="203.0.113.9") == "bypass"
    assert required(acl, "https://app.example.com/", ip="2001:db8::1") == "deny"
    assert required(acl, "https://app.example.com/", ip="::1") == "deny"


def test_networks_match_ipv6_clients_in_any_cidr() -> None:
    acl = access({"domain": "app.example.com", "networks": ["2001:db8::/32"], "policy": "bypass"})

    assert required(acl, "https://app.example.com/", ip="2001:db8:1::5") == "bypass"
    assert required(acl, "https://app.example.com/", ip="2001:db9::1") == "deny"
    assert required(acl, "https://app.example.com/", ip="32.1.13.184") == "deny"


# --- subjects ----------------------------------------------------------------------------------


def test_user_subject_matches_that_username_only() -> None:
    acl = access({"domain": "app.example.com", "subject": "user:john", "policy": "one_factor"})

    assert required(acl, "https://app.example.com/", JOHN) == "one_factor"
    assert required(acl, "https://app.example.com/", BOB) == "deny"


def test_user_subject_is_case_sensitive_as_authelia() -> None:
    acl = access({"domain": "app.example.com", "subject": "user:John", "policy": "one_factor"})

    assert required(acl, "https://app.example.com/", JOHN) == "deny"


def test_group_subject_matches_members() -> None:
    acl = access({"domain": "app.example.com", "subject": "group:dev", "policy": "one_factor"})

    assert required(acl, "https://app.example.com/", JOHN) == "one_factor"
    assert required(acl, "https://app.example.com/", BOB) == "one_factor"
    assert required(acl, "https://app.example.com/", HARRY) == "deny"


def test_subject_list_is_an_or() -> None:
    acl = access(
        {
            "domain": "app.example.com",
            "subject": ["user:harry", "group:admins"],
            "policy": "one_factor",
        }
    )

    assert required(acl, "https://app.example.com/", HARRY) == "one_factor"
    assert required(acl, "https://app.example.com/", JOHN) == "one_factor"
    assert required(acl, "https://app.example.com/", BOB) == "deny"


def test_inner_subject_list_is_an_and() -> None:
    acl = access(
        {
            "domain": "app.example.com",
            "subject": [["group:dev", "group:admins"], ["user:harry"]],
            "policy": "one_factor",
        }
    )

    assert required(acl, "https://app.example.com/", JOHN) == "one_factor"  # dev AND admins
    assert required(acl, "https://app.example.com/", BOB) == "deny"  # dev only
    assert required(acl, "https://app.example.com/", HARRY) == "one_factor"


def test_user_and_group_in_one_and_need_both() -> None:
    acl = access(
        {
            "domain": "app.example.com",
            "subject": [["user:bob", "group:admins"]],
            "policy": "one_factor",
        }
    )

    assert required(acl, "https://app.example.com/", BOB) == "deny"
    assert required(acl, "https://app.example.com/", JOHN) == "deny"


def test_signed_in_user_not_in_the_subject_falls_through_to_later_rules() -> None:
    acl = access(
        {"domain": "app.example.com", "subject": "group:admins", "policy": "one_factor"},
        {"domain": "app.example.com", "policy": "bypass"},
    )

    assert acl.decide(target("https://app.example.com/"), BOB) == Decision("bypass", 1)
    assert acl.decide(target("https://app.example.com/"), JOHN) == Decision("one_factor", 0)


# --- the potential match: anonymous visitors and subject rules ---------------------------------


def test_anonymous_visitor_must_sign_in_before_a_subject_rule_can_be_skipped() -> None:
    # Authelia's "Rule Matching Concept 2": the later bypass is not reached until we know who it is.
    acl = access(
        {"domain": "app.example.com", "subject": "group:admins", "policy": "one_factor"},
        {"domain": "app.example.com", "policy": "bypass"},
    )

    assert acl.decide(target("https://app.example.com/"), ANONYMOUS) == Decision("one_factor", 0)


def test_anonymous_visitor_is_asked_to_sign_in_by_a_subject_deny_rule_not_refused() -> None:
    # Authelia isAuthzResult: Denied && anonymous && ruleHasSubject -> Unauthorized (sign in).
    acl = access(
        {"domain": "app.example.com", "subject": "group:interns", "policy": "deny"},
        {"domain": "app.example.com", "policy": "one_factor"},
    )

    assert required(acl, "https://app.example.com/", ANONYMOUS) == "one_factor"
    assert required(acl, "https://app.example.com/", JOHN) == "one_factor"
    interns = User("ian", "Ian", (), ("interns",))
    assert required(acl, "https://app.example.com/", interns) == "deny"


def test_anonymous_visitor_is_refused_by_a_deny_rule_without_subject() -> None:
    acl = access({"domain": "app.example.com", "policy": "deny"})

    assert required(acl, "https://app.example.com/", ANONYMOUS) == "deny"


def test_a_bypass_rule_with_a_subject_never_lets_an_anonymous_visitor_through() -> None:
    # Authelia refuses this configuration; the portal asks for a sign-in instead of bypassing.
    acl = access({"domain": "app.example.com", "subject": "user:john", "policy": "bypass"})

    assert required(acl, "https://app.example.com/", ANONYMOUS) == "one_factor"
    assert required(acl, "https://app.example.com/", JOHN) == "bypass"
    assert required(acl, "https://app.example.com/", BOB) == "deny"


def test_a_subject_rule_whose_other_criteria_miss_is_no_potential_match() -> None:
    acl = access(
        {
            "domain": "app.example.com",
            "resources": ["^/admin"],
            "subject": "group:admins",
            "policy": "one_factor",
        },
        {"domain": "app.example.com", "policy": "bypass"},
    )

    assert required(acl, "https://app.example.com/home", ANONYMOUS) == "bypass"
    assert required(acl, "https://app.example.com/admin", ANONYMOUS) == "one_factor"


def test_user_placeholder_domain_matches_the_users_own_site() -> None:
    acl = access({"domain": "{user}.example.com", "policy": "one_factor"})

    assert required(acl, "https://john.example.com/", JOHN) == "one_factor"
    assert required(acl, "https://bob.example.com/", JOHN) == "deny"
    assert required(acl, "https://bob.example.com/", ANONYMOUS) == "one_factor"  # potential
    assert required(acl, "https://example.com/", ANONYMOUS) == "deny"


def test_group_placeholder_domain_matches_the_users_groups() -> None:
    acl = access({"domain": "{group}.example.com", "policy": "one_factor"})

    assert required(acl, "https://dev.example.com/", BOB) == "one_factor"
    assert required(acl, "https://admins.example.com/", BOB) == "deny"
    assert required(acl, "https://admins.example.com/", JOHN) == "one_factor"
    assert required(acl, "https://admins.example.com/", ANONYMOUS) == "one_factor"  # potential


def test_named_groups_in_domain_regex_match_user_and_group_case_insensitively() -> None:
    acl = access(
        {
            "domain_regex": [
                r"^user-(?P<User>\w+)\.example\.com$",
                r"^group-(?P<Group>\w+)\.example\.com$",
            ],
            "policy": "one_factor",
        }
    )

    assert required(acl, "https://user-john.example.com/", JOHN) == "one_factor"
    assert required(acl, "https://USER-JOHN.example.com/", JOHN) == "one_factor"
    assert required(acl, "https://user-bob.example.com/", JOHN) == "deny"
    assert required(acl, "https://group-dev.example.com/", BOB) == "one_factor"
    assert required(acl, "https://group-admins.example.com/", BOB) == "deny"
    assert required(acl, "https://user-bob.example.com/", ANONYMOUS) == "one_factor"


def test_named_user_group_in_resources_matches_the_users_own_path() -> None:
    acl = access(
        {
            "domain": "files.example.com",
            "resources": [r"^/home/(?P<User>[^/]+)/"],
            "policy": "one_factor",
        }
    )

    assert required(acl, "https://files.example.com/home/john/notes", JOHN) == "one_factor"
    assert required(acl, "https://files.example.com/home/bob/notes", JOHN) == "deny"
    assert required(acl, "https://files.example.com/home/bob/notes", ANONYMOUS) == "one_factor"


# --- RE2 semantics: rules match as Authelia's Go regexp does -----------------------------------
#
# Admins write domain_regex and resources for Authelia, whose Go regexp package has RE2's syntax
# and semantics, and they are matched against URLs an attacker chooses.

PUBLIC_ONLY = {"domain": "pub.example.com", "resources": ["^/public$"], "policy": "bypass"}


def test_a_bypass_for_public_does_not_let_public_with_an_encoded_newline_through() -> None:
    # Python's `$` also matches before a trailing newline; Go's (RE2) only at the end of the text.
    alone = access(PUBLIC_ONLY)
    then_sign_in = access(PUBLIC_ONLY, {"domain": "pub.example.com", "policy": "one_factor"})

    assert required(alone, "https://pub.example.com/public", ANONYMOUS) == "bypass"
    assert alone.decide(target("https://pub.example.com/public%0A"), ANONYMOUS) == Decision(
        "deny", None
    )
    assert then_sign_in.decide(target("https://pub.example.com/public%0A"), ANONYMOUS) == (
        Decision("one_factor", 1)
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://pub.example.com/public%0a",  # lower-case escape
        "https://pub.example.com/x/..%2Fpublic%0A",  # %2F decoded, then cleaned, then matched
    ],
)
def test_an_encoded_newline_at_the_end_of_the_path_never_satisfies_a_dollar(url: str) -> None:
    assert required(access(PUBLIC_ONLY), url, ANONYMOUS) == "deny"


def test_an_encoded_slash_is_decoded_before_the_rules_see_the_path_as_authelia() -> None:
    acl = access({"domain": "pub.example.com", "resources": ["^/a/b$"], "policy": "bypass"})

    assert required(acl, "https://pub.example.com/a%2Fb", ANONYMOUS) == "bypass"
    assert required(acl, "https://pub.example.com/a%2fb%0a", ANONYMOUS) == "deny"


def test_a_newline_at_the_end_of_the_query_never_satisfies_a_dollar() -> None:
    # A real URL cannot carry a raw newline (parse_url refuses it) and the query is matched raw
    # (%0A stays %0A), so build the target directly: the matcher itself must hold the line.
    acl = access({"domain": "pub.example.com", "resources": [r"^/api\?x=1$"], "policy": "bypass"})
    api = target("https://pub.example.com/api?x=1")

    assert acl.decide(api, ANONYMOUS) == Decision("bypass", 0)
    assert acl.decide(api._replace(query="x=1\n"), ANONYMOUS) == Decision("deny", None)
    assert required(acl, "https://pub.example.com/api?x=1%0A", ANONYMOUS) == "deny"
    with pytest.raises(ValueError):
        target("https://pub.example.com/api?x=1\n")


def test_a_newline_at_the_end_of_the_host_never_satisfies_a_dollar_in_domain_regex() -> None:
    # parse_url refuses a raw newline and leaves %0A in a host undecoded, so build it directly.
    acl = access({"domain_regex": r"^pub\.example\.com$", "policy": "bypass"})
    pub = target("https://pub.example.com/")

    assert acl.decide(pub, ANONYMOUS) == Decision("bypass", 0)
    assert acl.decide(pub._replace(host="pub.example.com\n"), ANONYMOUS) == Decision("deny", None)
    assert required(acl, "https://pub.example.com%0A/", ANONYMOUS) == "deny"
    with pytest.raises(ValueError):
        target("https://pub.example.com\n/")


def test_a_dollar_in_multi_line_mode_still_matches_before_a_newline_as_in_go() -> None:
    acl = access({"domain": "pub.example.com", "resources": ["(?m)^/public$"], "policy": "bypass"})

    assert required(acl, "https://pub.example.com/public%0A", ANONYMOUS) == "bypass"


def test_invalid_utf8_counts_one_character_per_byte_as_in_go() -> None:
    # Go's path is the percent-decoded bytes; its regexp reads each byte that is not UTF-8 as one
    # U+FFFD. Python's unquote would fold %E2%82 into a single U+FFFD.
    one = access({"domain": "pub.example.com", "resources": ["^/x/.$"], "policy": "bypass"})
    two = access({"domain": "pub.example.com", "resources": ["^/x/..$"], "policy": "bypass"})

    assert required(one, "https://pub.example.com/x/%E2%82", ANONYMOUS) == "deny"
    assert required(two, "https://pub.example.com/x/%E2%82", ANONYMOUS) == "bypass"
    assert required(one, "https://pub.example.com/x/%E2%82%AC", ANONYMOUS) == "bypass"  # one €


def test_raw_bytes_that_are_not_utf8_are_matched_not_crashed_on() -> None:
    # aiohttp hands header bytes that are not UTF-8 over as lone surrogates (surrogateescape).
    acl = access(
        {"domain": "pub.example.com", "resources": ["^/x/.$", r"\?q=.$"], "policy": "bypass"}
    )

    assert required(acl, "https://pub.example.com/x/\udcff", ANONYMOUS) == "bypass"
    assert required(acl, "https://pub.example.com/y?q=\udcff", ANONYMOUS) == "bypass"
    assert required(acl, "https://pub.example.com/x/\udcff\udcfe", ANONYMOUS) == "deny"


@pytest.mark.parametrize(
    ("rule", "url"),
    [
        (
            {"domain": "pub.example.com", "resources": ["^/(a+)+$"]},
            "https://pub.example.com/" + "a" * 50 + "!",
        ),
        ({"domain_regex": r"^(a+)+\.example\.com$"}, "https://" + "a" * 50 + "!.example.com/"),
    ],
)
def test_a_pattern_that_backtracks_catastrophically_in_python_answers_at_once(
    rule: dict[str, Any], url: str
) -> None:
    # Python's re would try 2**50 ways here and never return; RE2 is linear in the text.
    acl = access({**rule, "policy": "bypass"}, {"domain_regex": ".", "policy": "one_factor"})

    assert acl.decide(target(url), ANONYMOUS) == Decision("one_factor", 1)


def test_perl_classes_are_ascii_as_in_go() -> None:
    acl = access({"domain_regex": r"^user-(?P<User>\w+)\.example\.com$", "policy": "one_factor"})
    jorg = User("jörg", "Jörg", (), ())

    assert required(acl, "https://user-john.example.com/", JOHN) == "one_factor"
    assert required(acl, "https://user-jörg.example.com/", jorg) == "deny"


def test_gos_angle_bracket_named_group_reads_the_user() -> None:
    acl = access(
        {
            "domain": "files.example.com",
            "resources": [r"^/home/(?<User>[^/]+)/"],
            "policy": "one_factor",
        }
    )

    assert required(acl, "https://files.example.com/home/john/notes", JOHN) == "one_factor"
    assert required(acl, "https://files.example.com/home/bob/notes", JOHN) == "deny"


def test_a_name_given_to_two_groups_reads_the_last_as_authelia() -> None:
    # Go allows it; Authelia's loop over SubexpNames keeps the last one (access_control_domain.go).
    acl = access(
        {"domain_regex": r"^(?P<User>\w+)-(?P<User>\w+)\.example\.com$", "policy": "one_factor"}
    )

    assert required(acl, "https://bob-john.example.com/", JOHN) == "one_factor"
    assert required(acl, "https://bob-john.example.com/", BOB) == "deny"


def test_parentheses_in_a_class_or_a_quote_open_no_group_before_the_users() -> None:
    acl = access(
        {
            "domain": "files.example.com",
            "resources": [r"^/[(]\Q(x)(\E/(?P<User>[^/]+)/", r"^/[]()]/(?P<User>\w+)$"],
            "policy": "one_factor",
        }
    )

    assert required(acl, "https://files.example.com/((x)(/john/", JOHN) == "one_factor"
    assert required(acl, "https://files.example.com/((x)(/bob/", JOHN) == "deny"
    assert required(acl, "https://files.example.com/]/john", JOHN) == "one_factor"
    assert required(acl, "https://files.example.com/]/bob", JOHN) == "deny"


def test_end_of_text_is_gos_backslash_z() -> None:
    acl = access({"domain": "pub.example.com", "resources": [r"^/public\z"], "policy": "bypass"})

    assert required(acl, "https://pub.example.com/public", ANONYMOUS) == "bypass"
    assert required(acl, "https://pub.example.com/public%0A", ANONYMOUS) == "deny"


def test_patterns_are_case_sensitive_unless_they_say_otherwise() -> None:
    acl = access(
        {"domain": "pub.example.com", "resources": ["^/Public$"], "policy": "bypass"},
        {"domain": "pub.example.com", "resources": ["(?i)^/shared$"], "policy": "bypass"},
    )

    assert required(acl, "https://pub.example.com/Public", ANONYMOUS) == "bypass"
    assert required(acl, "https://pub.example.com/public", ANONYMOUS) == "deny"
    assert required(acl, "https://pub.example.com/SHARED", ANONYMOUS) == "bypass"


# --- order, default, two_factor ----------------------------------------------------------------


def test_first_matching_rule_decides() -> None:
    acl = access(
        {
            "domain": ["example.com", "*.example.com"],
            "resources": ["^/api$", "^/api/"],
            "policy": "bypass",
        },
        {"domain": "app.example.com", "policy": "deny"},
    )

    assert acl.decide(target("https://app.example.com/api"), JOHN) == Decision("bypass", 0)
    assert acl.decide(target("https://app.example.com/"), JOHN) == Decision("deny", 1)


def test_every_criterion_of_a_rule_must_match() -> None:
    acl = access(
        {
            "domain": "app.example.com",
            "resources": ["^/api"],
            "methods": ["POST"],
            "networks": ["10.0.0.0/8"],
            "subject": "group:dev",
            "policy": "one_factor",
        },
        default="bypass",
    )
    url = "https://app.example.com/api"

    assert required(acl, url, BOB, method="POST", ip="10.0.0.1") == "one_factor"
    assert required(acl, url, BOB, method="GET", ip="10.0.0.1") == "bypass"
    assert required(acl, url, BOB, method="POST", ip="11.0.0.1") == "bypass"
    assert required(acl, url, HARRY, method="POST", ip="10.0.0.1") == "bypass"
    assert required(acl, "https://app.example.com/web", BOB, method="POST", ip="10.0.0.1") == (
        "bypass"
    )


@pytest.mark.parametrize("policy", ["bypass", "one_factor", "two_factor", "deny"])
def test_default_policy_applies_when_no_rule_matches(policy: str) -> None:
    acl = access({"domain": "app.example.com", "policy": "deny"}, default=policy)

    decision = acl.decide(target("https://other.example.com/"), JOHN)

    assert (decision.required, decision.rule) == (policy, None)


def test_no_rules_at_all_means_the_default_policy() -> None:
    assert AccessControl(AccessControlConfig()).decide(target(), JOHN) == Decision("deny", None)


def test_two_factor_asks_for_two_factors_by_rule_and_by_default() -> None:
    acl = access({"domain": "app.example.com", "policy": "two_factor"}, default="two_factor")

    assert acl.decide(target("https://app.example.com/"), JOHN) == Decision("two_factor", 0)
    assert acl.decide(target("https://app.example.com/"), ANONYMOUS) == Decision("two_factor", 0)
    assert acl.decide(target("https://other.example.com/"), JOHN) == Decision("two_factor", None)


def test_an_anonymous_visitor_on_a_two_factor_rule_with_a_subject_is_asked_to_sign_in() -> None:
    acl = access(
        {"domain": "app.example.com", "subject": "group:admins", "policy": "two_factor"},
        default="bypass",
    )

    assert acl.decide(target("https://app.example.com/"), ANONYMOUS) == Decision("one_factor", 0)
    assert acl.decide(target("https://app.example.com/"), JOHN) == Decision("two_factor", 0)
    assert acl.decide(target("https://app.example.com/"), BOB) == Decision("bypass", None)


def test_a_second_factor_is_in_use_when_a_rule_or_the_default_asks_for_two() -> None:
    assert not access({"domain": "app.example.com", "policy": "one_factor"}).second_factor_enabled
    assert access({"domain": "app.example.com", "policy": "two_factor"}).second_factor_enabled
    assert access(default="two_factor").second_factor_enabled


# --- the rules of Authelia's Standalone suite (tests/fixtures/configuration.yml) ---------------


@pytest.fixture(scope="module")
def standalone() -> AccessControl:
    """The Standalone suite's access control as the fixture writes it, read by the loader."""
    environ = {"PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": JWT_SECRET}
    config, _ = read_config([FIXTURES / "configuration.yml"], environ)
    return AccessControl(config.access_control)


# What Authelia's Standalone suite expects of its rules (tests/compat checks its own file too).
STANDALONE_DECISIONS: list[tuple[str, str, User | None, Decision]] = [
    ("https://home.example.com:8080/", "GET", ANONYMOUS, Decision("bypass", 0)),
    ("https://public.example.com:8080/x", "GET", ANONYMOUS, Decision("bypass", 0)),
    ("https://deny.example.com:8080/", "GET", JOHN, Decision("deny", 2)),
    ("https://deny.example.com:8080/", "GET", ANONYMOUS, Decision("deny", 2)),
    ("https://singlefactor.example.com:8080/", "GET", ANONYMOUS, Decision("one_factor", 5)),
    ("https://singlefactor.example.com:8080/", "GET", JOHN, Decision("one_factor", 5)),
    # TestShouldRespectMethodsACL: OPTIONS to secure.example.com passes, GET does not.
    ("https://secure.example.com:8080/", "OPTIONS", ANONYMOUS, Decision("bypass", 1)),
    ("https://secure.example.com:8080/", "GET", ANONYMOUS, Decision("two_factor", 4)),
    ("https://admin.example.com:8080/", "GET", JOHN, Decision("two_factor", 3)),
    ("https://unknown.example.com:8080/", "GET", JOHN, Decision("deny", None)),
    ("https://example.com:8080/", "GET", ANONYMOUS, Decision("deny", None)),
]


@pytest.mark.parametrize(("url", "method", "user", "expected"), STANDALONE_DECISIONS)
def test_the_standalone_rules_give_the_suites_decisions(
    standalone: AccessControl, url: str, method: str, user: User | None, expected: Decision
) -> None:
    assert standalone.decide(target(url, method=method), user) == expected


# --- the hot path ------------------------------------------------------------------------------


def test_decide_compiles_no_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    acl = access(
        {
            "domain_regex": r"^(pub|img)-data\.example\.com$",
            "resources": [r"^/api/(?P<User>\w+)"],
            "policy": "one_factor",
        },
        {"domain": "*.example.com", "resources": ["^/static/"], "policy": "bypass"},
    )
    api = target("https://img-data.example.com/api/john")
    static = target("https://www.example.com/static/app.css")
    not_utf8 = target("https://www.example.com/static/caf%C3%A9%FF.css")
    re.purge()
    compiled: list[object] = []
    # re._compile is private, so typeshed leaves it out
    real_compile, real_private_compile = re.compile, re._compile  # type: ignore[attr-defined]

    def counting(real: Callable[..., object]) -> Callable[..., object]:
        def compile_and_count(pattern: object, *args: Any, **kwargs: Any) -> object:
            compiled.append(pattern)
            return real(pattern, *args, **kwargs)

        return compile_and_count

    # Every lazy compile (re.search, re.match, re.sub, re.compile) goes through these two;
    # every RE2 one (re2.search, re2.compile, ...) through re2.compile.
    monkeypatch.setattr(re, "compile", counting(real_compile))
    monkeypatch.setattr(re, "_compile", counting(real_private_compile))
    monkeypatch.setattr(re2, "compile", counting(re2.compile))
    decisions = [
        acl.decide(api, JOHN),
        acl.decide(api, ANONYMOUS),
        acl.decide(static, ANONYMOUS),
        acl.decide(not_utf8, ANONYMOUS),
    ]
    monkeypatch.undo()

    assert compiled == []
    assert decisions == [
        Decision("one_factor", 0),
        Decision("one_factor", 0),
        Decision("bypass", 1),
        Decision("bypass", 1),
    ]
