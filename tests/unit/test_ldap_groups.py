"""Which groups_filter shapes `portal users list` reads with one groups search (groups.py)."""

from __future__ import annotations

import pytest

from portal.users.ldap.groups import member_filter, memberof_batchable


@pytest.mark.parametrize(
    ("groups_filter", "expected"),
    [
        (
            "(&(member={dn})(objectClass=groupOfNames))",
            ("(&(member=*)(objectClass=groupOfNames))", ("member",)),
        ),
        (
            "(&(|(member={dn})(uniqueMember={dn}))(|(objectClass=groupOfNames)(cn=a\\29b)))",
            (
                "(&(|(member=*)(uniqueMember=*))(|(objectClass=groupOfNames)(cn=a\\29b)))",
                ("member", "uniqueMember"),
            ),
        ),
        ("(member={dn})", ("(member=*)", ("member",))),
        (
            "(&(member={dn})(whenChanged<={date-time:generalized}))",
            ("(&(member=*)(whenChanged<={date-time:generalized}))", ("member",)),
        ),
    ],
)
def test_a_member_term_becomes_a_presence_test(
    groups_filter: str, expected: tuple[str, tuple[str, ...]]
) -> None:
    assert member_filter(groups_filter) == expected


@pytest.mark.parametrize(
    "groups_filter",
    [
        "(&(memberUid={username})(objectClass=posixGroup))",  # a name, not a DN
        "(&(member:1.2.840.113556.1.4.1941:={dn})(objectClass=group))",  # nested groups
        "(|(member={dn})(objectClass=groupOfNames))",  # the term ORed with another
        "(&(member={dn})(owner={dn}))",  # two terms naming the user
        "(&(member={dn})(cn={input}))",
        "(&(|{memberof:dn})(member={dn}))",
        "(&(member={dn})(objectClass=groupOfNames)",  # unbalanced
        "(&(member={dn}) junk)",
    ],
)
def test_other_shapes_are_read_one_user_at_a_time(groups_filter: str) -> None:
    assert member_filter(groups_filter) is None


def test_memberof_filters_are_batched_unless_they_name_the_user_otherwise() -> None:
    assert memberof_batchable("(&(|{memberof:dn})(objectClass=group))")
    assert not memberof_batchable("(&(|{memberof:rdn})(member={dn}))")
    assert not memberof_batchable("(&(|{memberof:rdn})(cn={username}))")
