"""The slapd fixture itself: the test directory (tests/fixtures/ldap) binds, TLS verifies,
ppolicy and ACLs are live, and every test gets its own pristine server."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.integration.slapd import (
    ADMIN_DN,
    BASE_DN,
    GROUP_DNS,
    SERVICE_DN,
    SERVICE_PASSWORD,
    USER_DNS,
    USER_PASSWORD,
    Slapd,
    SlapdError,
)


def change_password(
    slapd: Slapd,
    user_dn: str,
    new: str,
    *,
    as_dn: str = SERVICE_DN,
    password: str = SERVICE_PASSWORD,
) -> subprocess.CompletedProcess[str]:
    """Set user_dn's password with ldappasswd (the Password Modify extended operation).

    ldappasswd exits 1 on any refusal and prints the LDAP result ("Constraint violation (19)")
    on stdout.
    """
    return slapd.run_tool(
        "ldappasswd",
        "-x",
        "-H",
        slapd.url(),
        "-D",
        as_dn,
        "-w",
        password,
        "-s",
        new,
        user_dn,
        check=False,
    )


def whoami_over_tls(
    slapd: Slapd, url: str, ca_file: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Bind as john over TLS, trusting only ca_file, and demanding a valid certificate."""
    return slapd.run_tool(
        "ldapwhoami",
        "-x",
        *extra,
        "-H",
        url,
        "-D",
        USER_DNS["john"],
        "-w",
        USER_PASSWORD,
        env={"LDAPTLS_CACERT": str(ca_file), "LDAPTLS_REQCERT": "demand"},
        check=False,
    )


@pytest.fixture
def other_ca_file(tmp_path: Path) -> Path:
    """A CA that never signed slapd's certificate."""
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


# --- the directory -------------------------------------------------------------------------


def test_the_users_and_the_service_account_bind_with_password(slapd: Slapd) -> None:
    for name, dn in USER_DNS.items():
        assert slapd.whoami(dn, USER_PASSWORD), name
    assert slapd.whoami(SERVICE_DN, SERVICE_PASSWORD)


def test_a_wrong_password_is_refused(slapd: Slapd) -> None:
    assert not slapd.whoami(USER_DNS["john"], "not-the-password")
    assert not slapd.whoami(SERVICE_DN, "Password")
    assert not slapd.whoami(f"cn=Nobody,ou=users,{BASE_DN}", USER_PASSWORD)


def test_users_carry_the_attributes_authelia_reads(slapd: Slapd) -> None:
    ldif = slapd.search(f"ou=users,{BASE_DN}", "(uid=john)", ["mail", "displayName", "+"])
    assert f"dn: {USER_DNS['john']}" in ldif
    assert "mail: john.doe@authelia.com" in ldif
    assert "displayName: John Doe" in ldif
    assert "entryUUID: " in ldif  # operational attributes come back with "+"


def test_the_groups_hold_their_members(slapd: Slapd) -> None:
    dev = slapd.search(GROUP_DNS["dev"], "(objectClass=groupOfNames)", ["member"])
    members = {
        line.removeprefix("member: ") for line in dev.splitlines() if line.startswith("member:")
    }
    assert members == {USER_DNS["john"], USER_DNS["bob"]}

    admins = slapd.search(GROUP_DNS["admins"], "(objectClass=groupOfNames)", ["member"])
    assert f"member: {USER_DNS['john']}" in admins
    assert USER_DNS["harry"] not in admins


# --- TLS ------------------------------------------------------------------------------------


def test_starttls_verifies_with_the_ca_and_fails_with_another(
    slapd: Slapd, other_ca_file: Path
) -> None:
    trusted = whoami_over_tls(slapd, slapd.url("ldap"), slapd.ca_file, "-ZZ")
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.strip() == f"dn:{USER_DNS['john']}"

    untrusted = whoami_over_tls(slapd, slapd.url("ldap"), other_ca_file, "-ZZ")
    assert untrusted.returncode != 0
    assert "ldap_start_tls" in untrusted.stderr, untrusted.stderr


def test_ldaps_verifies_with_the_ca_and_fails_with_another(
    slapd: Slapd, other_ca_file: Path
) -> None:
    trusted = whoami_over_tls(slapd, slapd.url("ldaps"), slapd.ca_file)
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.strip() == f"dn:{USER_DNS['john']}"

    untrusted = whoami_over_tls(slapd, slapd.url("ldaps"), other_ca_file)
    assert untrusted.returncode != 0
    assert "Can't contact LDAP server" in untrusted.stderr, untrusted.stderr


@pytest.mark.parametrize("server_name", ["127.0.0.1", "localhost"])
def test_the_certificate_names_loopback_and_localhost(slapd: Slapd, server_name: str) -> None:
    context = ssl.create_default_context(cadata=slapd.ca_pem)
    with (
        socket.create_connection((slapd.host, slapd.ldaps_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}


# --- password policy and ACLs ---------------------------------------------------------------


def test_ppolicy_rejects_a_short_password_after_set_policy(slapd: Slapd) -> None:
    # The fixture's lenient policy (pwdMinLength 3) takes a 5-letter password...
    assert change_password(slapd, USER_DNS["bob"], "short").returncode == 0
    assert slapd.whoami(USER_DNS["bob"], "short")

    slapd.set_policy(pwdMinLength=12)

    # ...a 12-letter minimum does not, and nothing changes.
    refused = change_password(slapd, USER_DNS["harry"], "short")
    assert refused.returncode != 0
    assert "Constraint violation (19)" in refused.stdout, refused.stdout + refused.stderr
    assert "quality" in refused.stdout
    assert slapd.whoami(USER_DNS["harry"], USER_PASSWORD)


def test_ppolicy_accepts_a_long_password(slapd: Slapd) -> None:
    slapd.set_policy(pwdMinLength=12, pwdCheckQuality=2)
    new = "correct-horse-battery"

    accepted = change_password(slapd, USER_DNS["harry"], new)

    assert accepted.returncode == 0, accepted.stderr
    assert slapd.whoami(USER_DNS["harry"], new)
    assert not slapd.whoami(USER_DNS["harry"], USER_PASSWORD)
    # olcPPolicyHashCleartext: the server stored a hash, not what it was sent.
    stored = slapd.search(USER_DNS["harry"], "(objectClass=*)", ["userPassword", "pwdChangedTime"])
    assert new not in stored
    assert "pwdChangedTime: " in stored


def test_password_history_refuses_reuse(slapd: Slapd) -> None:
    slapd.set_policy(pwdInHistory=3)
    user = USER_DNS["james"]
    assert change_password(slapd, user, "first-new-password").returncode == 0
    assert change_password(slapd, user, "second-new-password").returncode == 0

    for old in ("first-new-password", USER_PASSWORD):
        reused = change_password(slapd, user, old)
        assert reused.returncode != 0, old
        assert "Constraint violation (19)" in reused.stdout, reused.stdout + reused.stderr
        assert "in history" in reused.stdout
    assert slapd.whoami(user, "second-new-password")


def test_users_change_their_own_password_only(slapd: Slapd) -> None:
    john, harry = USER_DNS["john"], USER_DNS["harry"]
    own = change_password(slapd, john, "johns-new-password", as_dn=john)
    assert own.returncode == 0, own.stderr

    other = change_password(
        slapd, harry, "hijacked-password", as_dn=harry.replace("Harry Potter", "Bob Dylan")
    )
    assert other.returncode != 0
    assert "Insufficient access (50)" in other.stdout, other.stdout + other.stderr
    assert slapd.whoami(john, "johns-new-password")
    assert slapd.whoami(harry, USER_PASSWORD)


def test_only_the_service_account_reads_the_directory(slapd: Slapd) -> None:
    def mails(base: str, *bind: str) -> set[str]:
        search = ["ldapsearch", "-x", "-LLL", "-H", slapd.url(), *bind, "-b", base, "mail"]
        ldif = slapd.run_tool(*search, check=False).stdout
        return {
            line.removeprefix("mail: ") for line in ldif.splitlines() if line.startswith("mail:")
        }

    users = f"ou=users,{BASE_DN}"
    assert len(mails(users, "-D", SERVICE_DN, "-w", SERVICE_PASSWORD)) == len(USER_DNS)
    assert mails(users) == set()  # anonymous
    bob = ["-D", USER_DNS["bob"], "-w", USER_PASSWORD]
    assert mails(users, *bob) == set()  # may not even see ou=users...
    assert mails(USER_DNS["bob"], *bob) == {"bob.dylan@authelia.com"}  # ...only himself


# --- the server's life ----------------------------------------------------------------------


def test_restart_keeps_data_and_ports(slapd: Slapd) -> None:
    ports = (slapd.port, slapd.ldaps_port)
    assert change_password(slapd, USER_DNS["john"], "changed-before-restart").returncode == 0

    slapd.stop()
    assert not slapd.running
    with pytest.raises(OSError):
        socket.create_connection((slapd.host, slapd.port), timeout=1).close()
    slapd.start()

    assert (slapd.port, slapd.ldaps_port) == ports
    assert slapd.whoami(USER_DNS["john"], "changed-before-restart")
    slapd.restart()
    assert slapd.whoami(USER_DNS["john"], "changed-before-restart")


def test_modify_config_reaches_cn_config(slapd: Slapd) -> None:
    anonymous = ["ldapwhoami", "-x", "-H", slapd.url()]
    assert slapd.run_tool(*anonymous, check=False).returncode == 0

    slapd.modify_config(
        "dn: cn=config\nchangetype: modify\nreplace: olcDisallows\nolcDisallows: bind_anon\n"
    )

    assert slapd.run_tool(*anonymous, check=False).returncode != 0
    assert slapd.whoami(ADMIN_DN, slapd.admin_password)


def test_two_servers_are_independent(make_slapd: Callable[[], Slapd]) -> None:
    first, second = make_slapd(), make_slapd()
    assert {first.port, first.ldaps_port}.isdisjoint({second.port, second.ldaps_port})
    assert first.workdir != second.workdir

    assert change_password(first, USER_DNS["bob"], "only-on-the-first").returncode == 0

    assert first.whoami(USER_DNS["bob"], "only-on-the-first")
    assert second.whoami(USER_DNS["bob"], USER_PASSWORD)
    assert not second.whoami(USER_DNS["bob"], "only-on-the-first")


def test_a_slapd_that_cannot_start_says_why(slapd: Slapd) -> None:
    twin = Slapd(slapd.host, slapd.port, slapd.ldaps_port, "", slapd.ca_pem, slapd.workdir)
    with pytest.raises(SlapdError, match="Address already in use"):
        twin.start()
    assert not twin.running
    assert slapd.whoami(USER_DNS["john"], USER_PASSWORD)
