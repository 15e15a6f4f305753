"""What validate-config and serve check before any server is asked: files, directories, keys."""

from __future__ import annotations

import shutil
import sqlite3
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from ruamel.yaml import YAML

from portal.checks import check_config, replica_warnings
from portal.config import TlsConfig
from portal.errors import ConfigError
from portal.tls import OLD_MEANING, client_context, read_certificates_directory
from tests.conftest import REPO, deep_merge, minimal_raw


def write_config(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "configuration.yml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(deep_merge(minimal_raw(tmp_path), changes), handle)
    return path


def problems(tmp_path: Path, **changes: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        check_config([write_config(tmp_path, **changes)], {})
    return caught.value.problems


@pytest.fixture
def users(tmp_path: Path) -> Path:
    """The demo users where the minimal configuration looks for them."""
    target = tmp_path / "users.yml"
    shutil.copy(REPO / "config" / "users_database.yml", target)
    return target


def test_a_configuration_whose_files_are_all_there_passes(tmp_path: Path, users: Path) -> None:
    config, warnings = check_config([write_config(tmp_path)], {})
    assert config.authentication_backend.file is not None
    assert warnings == []


def test_the_checks_create_nothing(tmp_path: Path, users: Path) -> None:
    state = tmp_path / "state"
    check_config(
        [
            write_config(
                tmp_path,
                notifier={"filesystem": {"filename": str(state / "mail" / "notification.txt")}},
                storage={"local": {"path": str(state / "db" / "db.sqlite3")}},
            )
        ],
        {},
    )
    assert not state.exists()


# --- the users file ------------------------------------------------------------------------------


def test_a_missing_users_file_is_reported(tmp_path: Path) -> None:
    users = tmp_path / "users.yml"
    assert problems(tmp_path) == [
        f"authentication_backend.file.path: users file {users}: cannot be read: No such file or "
        "directory"
    ]


def test_a_users_file_that_is_not_yaml_is_reported_with_its_line_and_column(
    tmp_path: Path, users: Path
) -> None:
    users.write_text("users:\n  john:\n    groups: [admins\n")
    assert problems(tmp_path) == [
        f"authentication_backend.file.path: users file {users}: is not valid YAML: expected ',' "
        "or ']', but got '<stream end>' (line 4, column 1)"
    ]


def test_a_users_file_without_users_is_reported(tmp_path: Path, users: Path) -> None:
    users.write_text("users: [john]\n")
    assert problems(tmp_path) == [
        f"authentication_backend.file.path: users file {users}: must be a mapping with a 'users' "
        "mapping at the top level"
    ]


def test_hashing_settings_the_backend_cannot_use_are_reported(tmp_path: Path, users: Path) -> None:
    password = {"argon2": {"memory": 8, "parallelism": 4}}
    assert problems(tmp_path, authentication_backend={"file": {"password": password}}) == [
        "authentication_backend.file.password: argon2 memory must be at least 8 KiB per lane "
        "(8 x parallelism)"
    ]


# --- the notifier -------------------------------------------------------------------------------


def test_a_template_path_that_does_not_exist_is_reported(tmp_path: Path, users: Path) -> None:
    # Authelia: "notifier: option 'template_path' refers to location '...' which does not exist".
    missing = tmp_path / "templates"
    assert problems(tmp_path, notifier={"template_path": str(missing)}) == [
        f"notifier.template_path: {missing} does not exist"
    ]


def test_a_template_path_that_is_a_file_is_reported(tmp_path: Path, users: Path) -> None:
    assert problems(tmp_path, notifier={"template_path": str(users)}) == [
        f"notifier.template_path: {users} is not a directory"
    ]


def test_an_overriding_template_that_does_not_parse_is_reported_with_its_line(
    tmp_path: Path, users: Path
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "reset_password.txt").write_text("Hello {{ display_name }},\n\n{{ link }\n")
    (templates / "password_changed.html").write_text("<p>Changed.</p>\n")
    assert problems(tmp_path, notifier={"template_path": str(templates)}) == [
        f"notifier.template_path: {templates / 'reset_password.txt'}: not a valid template "
        "(line 3): unexpected '}'"
    ]


def test_files_the_portal_does_not_use_are_not_read_as_templates(
    tmp_path: Path, users: Path
) -> None:
    # An Authelia template directory carried over holds Go templates under Authelia's names.
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "IdentityVerificationJWT.html").write_text("{{ .Title }} {{ if .LinkURL }}")
    check_config([write_config(tmp_path, notifier={"template_path": str(templates)})], {})


def test_an_smtp_certificate_chain_and_key_that_are_not_pem_are_reported(
    tmp_path: Path, users: Path
) -> None:
    smtp = {
        "address": "submissions://127.0.0.1:1",  # never contacted
        "sender": "portal@example.com",
        "tls": {"certificate_chain": "not a certificate", "private_key": "not a key either"},
    }
    assert problems(tmp_path, notifier={"filesystem": None, "smtp": smtp}) == [
        "notifier.smtp.tls.certificate_chain: holds no PEM certificate ('-----BEGIN CERTIFICATE')",
        "notifier.smtp.tls.private_key: holds no usable PEM private key ('-----BEGIN ... KEY')",
    ]


def test_a_redis_client_key_without_its_certificate_is_reported(
    tmp_path: Path, users: Path
) -> None:
    redis = {"host": "127.0.0.1", "port": 1, "tls": {"private_key": "a key"}}  # never contacted
    cookies = minimal_raw(tmp_path)["session"]["cookies"]

    assert problems(tmp_path, session={"cookies": cookies, "redis": redis}) == [
        "session.redis.tls.private_key: needs certificate_chain, the client certificate (and its "
        "intermediates) the key belongs to"
    ]


# --- files the portal writes --------------------------------------------------------------------


def test_files_the_portal_would_write_need_a_directory(tmp_path: Path, users: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    found = problems(
        tmp_path,
        notifier={"filesystem": {"filename": str(blocker / "mail" / "notification.txt")}},
        storage={"local": {"path": str(blocker / "db.sqlite3")}},
        log={"file_path": str(tmp_path / "no-such-directory" / "portal.log")},
    )
    assert found == [
        f"log.file_path: cannot create {tmp_path / 'no-such-directory' / 'portal.log'}: "
        f"{tmp_path / 'no-such-directory'} does not exist",
        f"notifier.filesystem.filename: cannot create {blocker / 'mail' / 'notification.txt'}: "
        f"{blocker} is not a directory",
        f"storage.local.path: cannot create {blocker / 'db.sqlite3'}: {blocker} is not a directory",
    ]


def test_a_directory_where_a_file_belongs_is_reported(tmp_path: Path, users: Path) -> None:
    (tmp_path / "db").mkdir()
    assert problems(tmp_path) == [f"storage.local.path: {tmp_path / 'db'} is a directory"]


def test_a_unix_socket_needs_its_directory(tmp_path: Path, users: Path) -> None:
    socket = tmp_path / "run" / "portal.sock"
    assert problems(tmp_path, server={"address": f"unix://{socket}"}) == [
        f"server.address: cannot create {socket}: {socket.parent} does not exist"
    ]


def test_a_database_from_a_newer_portal_is_reported(tmp_path: Path, users: Path) -> None:
    with sqlite3.connect(tmp_path / "db") as conn:
        conn.execute("PRAGMA user_version = 99")
    [problem] = problems(tmp_path)
    assert problem.startswith(f"storage.local.path: {tmp_path / 'db'} is at schema version 99, ")


def test_a_file_that_is_no_database_is_reported(tmp_path: Path, users: Path) -> None:
    (tmp_path / "db").write_text("not a database, just text that is long enough " * 4)
    [problem] = problems(tmp_path)
    assert problem.startswith(f"storage.local.path: cannot read {tmp_path / 'db'}: ")


def test_postgres_storage_is_checked_without_connecting(tmp_path: Path, users: Path) -> None:
    # Nothing listens on port 1: the checks never connect (the start-up check does).
    storage = {"local": None, "postgres": {"address": "tcp://127.0.0.1:1"}}
    config, _ = check_config([write_config(tmp_path, storage=storage)], {})
    assert config.storage.postgres is not None
    assert str(config.storage.postgres.address) == "tcp://127.0.0.1:1"


def test_postgres_tls_settings_are_checked_without_connecting(tmp_path: Path, users: Path) -> None:
    postgres = {
        "address": "tcp://127.0.0.1:1",  # nothing listens there: the checks never connect
        "tls": {"certificate_chain": "not a certificate", "server_name": "db.example.com"},
    }
    assert problems(tmp_path, storage={"local": None, "postgres": postgres}) == [
        "storage.postgres.tls.server_name: must be the host name of every address (127.0.0.1): "
        "the driver checks the certificate against it",
        "storage.postgres.tls." + OLD_MEANING,
    ]


# --- LDAP, without a directory ------------------------------------------------------------------


def test_ldap_settings_are_checked_without_connecting(tmp_path: Path) -> None:
    ldap = {
        "address": "ldaps://127.0.0.1:1",  # nothing listens there: the checks never connect
        "implementation": "custom",
        "tls": {"certificate_chain": "not a certificate"},
    }
    found = problems(tmp_path, authentication_backend={"file": None, "ldap": ldap})
    assert found[:3] == [
        "authentication_backend.ldap.base_dn: is required",
        "authentication_backend.ldap.users_filter: is required with implementation 'custom'",
        "authentication_backend.ldap.groups_filter: is required with implementation 'custom'",
    ]
    assert found[3] == (
        "authentication_backend.ldap.user and authentication_backend.ldap.password: a service "
        "account with a password is required"
    )
    assert found[4] == "authentication_backend.ldap.tls." + OLD_MEANING
    assert len(found) == 5


def test_ldap_problems_come_once_each_with_an_unrelated_problem(tmp_path: Path) -> None:
    ldap = {
        "address": "ldap://127.0.0.1:1",  # never contacted
        "base_dn": "dc=example,dc=com",
        "groups_filter": "(member={dn})",
        "user": "cn=portal,dc=example,dc=com",
        "password": "service-password",
    }
    found = problems(
        tmp_path, log={"level": "loud"}, authentication_backend={"file": None, "ldap": ldap}
    )
    assert found == [
        "log.level: must be 'trace', 'debug', 'info', 'warn', 'warning' or 'error'",
        "authentication_backend.ldap.users_filter: is required with implementation 'custom'",
    ]


def test_an_invalid_ldap_filter_is_reported_with_the_other_ldap_problems(tmp_path: Path) -> None:
    ldap = {
        "address": "ldap://127.0.0.1:1",  # never contacted
        "base_dn": "dc=example,dc=com",
        "users_filter": "(&(uid={input})",
        "groups_filter": "(member={dn})",
    }
    found = problems(tmp_path, authentication_backend={"file": None, "ldap": ldap})
    assert len(found) == 2
    assert found[0] == (
        "authentication_backend.ldap.user and authentication_backend.ldap.password: a service "
        "account with a password is required"
    )
    assert found[1].startswith("authentication_backend.ldap.users_filter: is not a valid LDAP ")


# --- all at once -------------------------------------------------------------------------------


def test_file_problems_come_with_the_other_problems_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        log={"level": "loud"},
        notifier={"template_path": str(tmp_path / "templates")},
    )
    assert found == [
        "log.level: must be 'trace', 'debug', 'info', 'warn', 'warning' or 'error'",
        f"authentication_backend.file.path: users file {tmp_path / 'users.yml'}: cannot be read: "
        "No such file or directory",
        f"notifier.template_path: {tmp_path / 'templates'} does not exist",
    ]


def test_a_section_that_does_not_validate_is_not_checked_further(tmp_path: Path) -> None:
    found = problems(tmp_path, authentication_backend={"file": {"watch": "sometimes"}})
    assert found == [
        "authentication_backend.file.watch: must be a valid boolean, unable to interpret input"
    ]


# --- TLS keys with Authelia's meaning (issue 12) -------------------------------------------------

TLS_SECTIONS = {
    "authentication_backend.ldap.tls": lambda tls: {
        "authentication_backend": {
            "file": None,
            "ldap": {
                "address": "ldaps://127.0.0.1:1",  # never contacted
                "implementation": "activedirectory",
                "base_dn": "DC=example,DC=com",
                "user": "CN=portal,DC=example,DC=com",
                "password": "service-password",
                "tls": tls,
            },
        }
    },
    "notifier.smtp.tls": lambda tls: {
        "notifier": {
            "filesystem": None,
            "smtp": {
                "address": "submissions://127.0.0.1:1",  # never contacted
                "sender": "portal@example.com",
                "tls": tls,
            },
        }
    },
}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def client_tls(ca: trustme.CA) -> dict[str, str]:
    issued = ca.issue_cert("portal-client.test")
    return {
        "certificate_chain": "".join(pem.bytes().decode() for pem in issued.cert_chain_pems),
        "private_key": issued.private_key_pem.bytes().decode(),
    }


@pytest.mark.parametrize("where", TLS_SECTIONS)
def test_a_matching_client_certificate_and_key_pass(
    tmp_path: Path, users: Path, ca: trustme.CA, where: str
) -> None:
    check_config([write_config(tmp_path, **TLS_SECTIONS[where](client_tls(ca)))], {})


@pytest.mark.parametrize("where", TLS_SECTIONS)
def test_a_configuration_for_the_old_meaning_is_told_what_to_do(
    tmp_path: Path, users: Path, ca: trustme.CA, where: str
) -> None:
    # The portal once read certificate_chain as a CA to trust: such a block has no private_key.
    tls = {"certificate_chain": ca.cert_pem.bytes().decode()}
    assert problems(tmp_path, **TLS_SECTIONS[where](tls)) == [
        f"{where}.certificate_chain: is the client certificate presented for mutual TLS (as in "
        "Authelia) and needs private_key; to trust a private CA instead, remove "
        "certificate_chain and put the CA's certificate in the folder named by the top-level "
        "certificates_directory"
    ]


@pytest.mark.parametrize("where", TLS_SECTIONS)
def test_a_key_that_does_not_belong_to_the_certificate_is_refused_without_showing_it(
    tmp_path: Path, users: Path, ca: trustme.CA, where: str
) -> None:
    tls = client_tls(ca)
    other_key = client_tls(ca)["private_key"]
    tls["private_key"] = other_key
    found = problems(tmp_path, **TLS_SECTIONS[where](tls))
    assert found == [
        f"{where}.private_key: does not belong to the first certificate of certificate_chain "
        "(the chain must start with the client certificate itself)"
    ]
    key_lines = [line for line in other_key.splitlines() if "-----" not in line]
    assert not any(line in problem for problem in found for line in key_lines)


@pytest.mark.parametrize("where", TLS_SECTIONS)
def test_a_chain_in_the_wrong_order_is_refused(
    tmp_path: Path, users: Path, ca: trustme.CA, where: str
) -> None:
    tls = client_tls(ca)
    tls["certificate_chain"] = ca.cert_pem.bytes().decode() + tls["certificate_chain"]
    assert problems(tmp_path, **TLS_SECTIONS[where](tls)) == [
        f"{where}.private_key: does not belong to the first certificate of certificate_chain "
        "(the chain must start with the client certificate itself)"
    ]


@pytest.mark.parametrize("where", TLS_SECTIONS)
def test_a_key_without_its_certificate_is_refused(
    tmp_path: Path, users: Path, ca: trustme.CA, where: str
) -> None:
    tls = {"private_key": client_tls(ca)["private_key"]}
    assert problems(tmp_path, **TLS_SECTIONS[where](tls)) == [
        f"{where}.private_key: needs certificate_chain, the client certificate (and its "
        "intermediates) the key belongs to"
    ]


@pytest.mark.parametrize("where", TLS_SECTIONS)
def test_a_key_that_is_not_pem_is_refused_without_showing_it(
    tmp_path: Path, users: Path, ca: trustme.CA, where: str
) -> None:
    tls = client_tls(ca)
    tls["private_key"] = (
        "-----BEGIN PRIVATE KEY-----\nS3cretKeyMaterial\n-----END PRIVATE KEY-----\n"
    )
    found = problems(tmp_path, **TLS_SECTIONS[where](tls))
    assert found == [f"{where}.private_key: holds no usable PEM private key ('-----BEGIN ... KEY')"]
    assert "S3cretKeyMaterial" not in "".join(found)


@pytest.mark.parametrize("where", TLS_SECTIONS)
def test_a_minimum_version_above_the_maximum_is_refused(
    tmp_path: Path, users: Path, where: str
) -> None:
    tls = {"minimum_version": "TLS1.3", "maximum_version": "TLS1.2"}
    assert problems(tmp_path, **TLS_SECTIONS[where](tls)) == [
        f"{where}.minimum_version: must not be above maximum_version"
    ]


def test_certificates_directory_is_supported_and_read(
    tmp_path: Path, users: Path, ca: trustme.CA
) -> None:
    folder = tmp_path / "certificates"
    folder.mkdir()
    ca.cert_pem.write_to_path(str(folder / "company-ca.CRT"))
    (folder / "README").write_text("certificate files only are read")
    config, warnings = check_config(
        [write_config(tmp_path, certificates_directory=str(folder))], {}
    )
    assert config.certificates_directory == folder
    assert warnings == []


def test_a_certificates_directory_that_is_missing_is_reported(tmp_path: Path, users: Path) -> None:
    missing = tmp_path / "no-such-folder"
    assert problems(tmp_path, certificates_directory=str(missing)) == [
        f"certificates_directory: cannot read the folder {missing}: No such file or directory"
    ]


def test_every_unreadable_certificate_file_is_named_with_the_other_problems(
    tmp_path: Path, users: Path, ca: trustme.CA
) -> None:
    folder = tmp_path / "certificates"
    folder.mkdir()
    ca.cert_pem.write_to_path(str(folder / "good.pem"))
    (folder / "broken.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    (folder / "der.cer").write_bytes(b"\x30\x82\x01\x0a")
    found = problems(tmp_path, certificates_directory=str(folder), log={"level": "loud"})
    assert found == [
        f"certificates_directory: {folder / 'broken.crt'} holds no PEM certificate; "
        f"{folder / 'der.cer'} holds no PEM certificate",
        "log.level: must be 'trace', 'debug', 'info', 'warn', 'warning' or 'error'",
    ]


def test_a_key_protected_by_a_password_is_refused(
    tmp_path: Path, users: Path, ca: trustme.CA
) -> None:
    tls = client_tls(ca)
    key = serialization.load_pem_private_key(tls["private_key"].encode(), password=None)
    tls["private_key"] = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key password"),
    ).decode()
    assert problems(tmp_path, **TLS_SECTIONS["notifier.smtp.tls"](tls)) == [
        "notifier.smtp.tls.private_key: is protected by a password; give it unencrypted"
    ]


def test_a_ca_with_a_negative_serial_number_is_trusted_as_openssl_trusts_it(
    tmp_path: Path, users: Path
) -> None:
    # Samba's own CA often has one; `cryptography` warns (and will refuse), OpenSSL takes it.
    folder = tmp_path / "certificates"
    folder.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(tmp_path / "ca.key"),
            "-out",
            str(folder / "samba-ca.pem"),
            "-subj",
            "/CN=Negative serial CA",
            "-days",
            "2",
            "-set_serial",
            "-12345",
        ],
        check=True,
        capture_output=True,
    )
    key = (tmp_path / "ca.key").read_text()
    (folder / "with-a-key.pem").write_text((folder / "samba-ca.pem").read_text() + key)
    config, warnings = check_config(
        [write_config(tmp_path, certificates_directory=str(folder))], {}
    )
    assert config.certificates_directory == folder and warnings == []
    trusted = read_certificates_directory(folder)
    assert trusted.count("BEGIN CERTIFICATE") == 2
    assert "PRIVATE KEY" not in trusted


def test_the_client_key_never_reaches_a_file_on_linux(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key is handed to OpenSSL through anonymous memory (memfd), not a temporary file that
    # a crash could leave behind: no temporary folder is ever made, and the context presents it.
    def no_disk(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a temporary folder was made for the private key")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_disk)
    context = client_context(TlsConfig(**client_tls(ca)), None, "notifier.smtp.tls")
    assert isinstance(context, ssl.SSLContext)


# --- single-machine parts of a configuration meant for several replicas -----------------------

POSTGRES = {"address": "tcp://db.example.com:5432", "database": "portal", "username": "portal"}
POSTGRES_STORAGE = {"local": None, "postgres": {**POSTGRES, "password": "x"}}
REDIS = {"host": "redis.example.com"}


def test_replica_settings_with_the_users_file_and_filesystem_notifier_warn_of_both(
    tmp_path: Path, users: Path
) -> None:
    config, _ = check_config([write_config(tmp_path, storage=POSTGRES_STORAGE)], {})

    warnings = replica_warnings(config)

    assert [w.split(":")[0] for w in warnings] == [
        "authentication_backend.file",
        "notifier.filesystem",
    ]
    assert "this machine" in warnings[0] and "this machine" in warnings[1]


def test_session_redis_alone_is_enough_to_warn(tmp_path: Path, users: Path) -> None:
    config, _ = check_config([write_config(tmp_path, session={"redis": REDIS})], {})

    assert len(replica_warnings(config)) == 2


def test_one_machine_on_sqlite_gets_no_replica_warning(tmp_path: Path, users: Path) -> None:
    config, _ = check_config([write_config(tmp_path)], {})

    assert replica_warnings(config) == []


def test_the_outbox_lease_and_poll_interval_are_read_and_checked(
    tmp_path: Path, users: Path
) -> None:
    outbox = {"poll_interval": "250ms", "lease": "30s"}
    config, _ = check_config([write_config(tmp_path, notifier={"outbox": outbox})], {})

    assert config.notifier.outbox.poll_interval.total_seconds() == 0.25
    assert config.notifier.outbox.lease.total_seconds() == 30
    assert any(
        "notifier.outbox.lease" in problem
        for problem in problems(tmp_path, notifier={"outbox": {"lease": "0s"}})
    )


def test_an_outbox_lease_shorter_than_a_slow_send_is_warned_of_with_replicas(
    tmp_path: Path, users: Path
) -> None:
    smtp = {"address": "smtp://mail.example.com:25", "sender": "portal@example.com"}
    slow = {"filesystem": None, "smtp": {**smtp, "timeout": "20s"}, "outbox": {"lease": "2m"}}
    config, _ = check_config([write_config(tmp_path, storage=POSTGRES_STORAGE, notifier=slow)], {})
    [lease] = [w for w in replica_warnings(config) if w.startswith("notifier.outbox.lease")]
    assert lease.startswith("notifier.outbox.lease: 120s is not longer than one slow send")
    assert "180s" in lease

    fine = deep_merge(slow, {"smtp": {"timeout": "5s"}})
    config, _ = check_config([write_config(tmp_path, storage=POSTGRES_STORAGE, notifier=fine)], {})
    assert not [w for w in replica_warnings(config) if w.startswith("notifier.outbox")]
