"""The checks `validate-config` and `serve` both make before any server is asked.

Everything the portal would refuse at start-up that needs no server: files that must exist and
parse (the users file, mail templates, an existing database), settings a backend refuses before
connecting (LDAP's filter syntax and certificates; SMTP's and Redis's certificates) and places
the portal writes to (the database, the mail file, the log file, a unix socket). Each backend's
own code does its part, so a check and the start-up it predicts cannot disagree; like deps.py,
this module follows the configuration to the implementation, so a new backend needs its check
here too. Nothing here creates or changes a file. `serve` still runs every backend's
startup_check after these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from portal.config import (
    AuthenticationBackendConfig,
    Config,
    LogConfig,
    NotifierConfig,
    ServerConfig,
    SessionConfig,
    StorageConfig,
    read_sections,
)
from portal.errors import ConfigError
from portal.mail import template_problems
from portal.notify.smtp import check_smtp_settings
from portal.storage.postgres.connection import check_postgres_settings
from portal.storage.redis import check_redis_settings
from portal.storage.sqlite import check_database_file
from portal.users.file import check_users_file
from portal.users.ldap import check_ldap_settings


def check_config(paths: Sequence[Path], environ: Mapping[str, str]) -> tuple[Config, list[str]]:
    """Load the configuration and run every local check; return it with its warnings.

    Raise ConfigError listing every problem at once: those of the configuration itself, then
    those of the files each valid section names (`authentication_backend.file.path: users file
    /etc/portal/users.yml: cannot be read: No such file or directory`).
    """
    reading = read_sections(paths, environ)
    problems = [*reading.problems, *local_checks(reading.sections)]
    if problems or reading.config is None:
        raise ConfigError(problems)
    return reading.config, reading.warnings


def replica_warnings(config: Config) -> list[str]:
    """Return a warning for each single-machine part of a configuration meant for replicas.

    storage.postgres or session.redis is what an admin configures to run several replicas
    (Authelia's documentation: high availability needs both). With it, the users file and the
    filesystem notifier still live on this machine's disk: replicas on other machines would each
    read and write their own copy; and an outbox lease no longer than one slow SMTP send lets
    another replica send a mail twice. Only the configuration is read; nothing is connected to.
    """
    if config.storage.postgres is None and config.session.redis is None:
        return []
    found = []
    if config.authentication_backend.file is not None:
        found.append(
            "authentication_backend.file: the users file is on this machine only; replicas on "
            "other machines would each change their own copy (use authentication_backend.ldap)"
        )
    if config.notifier.filesystem is not None:
        found.append(
            "notifier.filesystem: mails are written to this machine's disk only; a mail may be "
            "sent by any replica, so on several machines they end up in several files "
            "(use notifier.smtp)"
        )
    smtp = config.notifier.smtp
    if config.storage.postgres is not None and smtp is not None:
        # A send is up to SMTP_STEPS exchanges (connect, EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT,
        # DATA, the message), each bounded by notifier.smtp.timeout.
        longest = SMTP_STEPS * smtp.timeout
        if config.notifier.outbox.lease <= longest:
            found.append(
                f"notifier.outbox.lease: {_seconds(config.notifier.outbox.lease)} is not longer "
                f"than one slow send ({SMTP_STEPS} SMTP steps of notifier.smtp.timeout, "
                f"{_seconds(longest)}): another replica could send a mail still being sent"
            )
    return found


# How many SMTP exchanges one send may wait on (see replica_warnings).
SMTP_STEPS = 9


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


def local_checks(sections: Mapping[str, BaseModel]) -> list[str]:
    """Return what start-up would refuse in these top-level sections, without any server."""
    problems: list[str] = []
    for section in sections.values():
        if isinstance(section, ServerConfig):
            problems += _server(section)
        elif isinstance(section, LogConfig) and section.file_path is not None:
            problems += _writable("log.file_path", section.file_path, creates_directories=False)
        elif isinstance(section, AuthenticationBackendConfig):
            problems += _users(section)
        elif isinstance(section, NotifierConfig):
            problems += _notifier(section)
        elif isinstance(section, StorageConfig):
            problems += _storage(section)
        elif isinstance(section, SessionConfig) and section.redis is not None:
            problems += check_redis_settings(section.redis)
    return problems


def _server(server: ServerConfig) -> list[str]:
    if server.address.scheme != "unix":
        return []
    return _writable("server.address", Path(server.address.path), creates_directories=False)


def _users(backend: AuthenticationBackendConfig) -> list[str]:
    if backend.file is not None:
        return check_users_file(backend.file)
    if backend.ldap is not None:
        return check_ldap_settings(backend.ldap)
    return []


def _notifier(notifier: NotifierConfig) -> list[str]:
    problems = []
    if notifier.template_path is not None:
        problems += [
            f"notifier.template_path: {problem}"
            for problem in template_problems(notifier.template_path)
        ]
    if notifier.filesystem is not None:
        filename = notifier.filesystem.filename
        problems += _writable("notifier.filesystem.filename", filename, creates_directories=True)
    if notifier.smtp is not None:
        problems += check_smtp_settings(notifier.smtp)
    return problems


def _storage(storage: StorageConfig) -> list[str]:
    if storage.postgres is not None:
        return check_postgres_settings(storage.postgres)  # never connects
    assert storage.local is not None  # noqa: S101 - the model guarantees one of both
    path = storage.local.path
    problems = _writable("storage.local.path", path, creates_directories=True)
    problem = None if problems else check_database_file(path)
    return problems + ([f"storage.local.path: {problem}"] if problem else [])


def _writable(key: str, path: Path, *, creates_directories: bool) -> list[str]:
    """Say why the portal could not create or write the file at path (the file stays as it is).

    The portal creates missing directories for some files (the database, the mail file) and
    not for others (the log file, a unix socket).
    """
    if path.exists():
        if path.is_dir():
            return [f"{key}: {path} is a directory"]
        if not os.access(path, os.W_OK):
            return [f"{key}: {path} is not writable"]
        return []
    directory = path.parent
    while creates_directories and not directory.exists() and directory != directory.parent:
        directory = directory.parent
    if directory.is_dir():
        if os.access(directory, os.W_OK | os.X_OK):
            return []
        return [f"{key}: cannot create {path}: {directory} is not writable"]
    if directory.exists() or creates_directories:
        return [f"{key}: cannot create {path}: {directory} is not a directory"]
    return [f"{key}: cannot create {path}: {directory} does not exist"]
