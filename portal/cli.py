"""The `portal` command: serve, validate-config, storage, users, crypto."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import secrets
import signal
import string
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from portal import admin
from portal.admin import change_encryption_key, delete_second_factor
from portal.app import create_app
from portal.checks import check_config, replica_warnings
from portal.config import Config, PasswordConfig
from portal.config.storage import ENCRYPTION_KEY_MINIMUM
from portal.deps import storage_from_config
from portal.errors import (
    ConfigError,
    PortalError,
    RateLimitedError,
    StartupCheckError,
    UnsupportedHashError,
)
from portal.logs import SafeAccessLogger, configure_logging
from portal.storage.encryption import WRONG_KEY
from portal.storage.info import migrate_up, schema_info
from portal.users.hashing import hash_password, verify_password
from portal.users.passwords import normalize_password, password_candidates

DEFAULT_CONFIG = Path("config/configuration.yml")
ALGORITHMS = ("argon2", "sha2crypt", "pbkdf2", "bcrypt", "scrypt")
ALPHANUMERIC = string.ascii_letters + string.digits
log = logging.getLogger("portal")


class CliError(Exception):
    """A problem reported to the user as one line on stderr."""


def _config_paths(given: list[Path] | None) -> list[Path]:
    if given:
        return given
    from_env = os.environ.get("PORTAL_CONFIG") or os.environ.get("AUTHELIA_CONFIG")
    if from_env:
        return [Path(p) for p in from_env.split(",") if p]
    return [DEFAULT_CONFIG]


def _load(given: list[Path] | None) -> tuple[Config, list[str]]:
    # validate-config and serve check the same things: everything but the servers themselves.
    return check_config(_config_paths(given), os.environ)


def _validate_config(args: argparse.Namespace) -> int:
    config, warnings = _load(args.config)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("Configuration is valid.")
    return 0


async def _serve(config: Config) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, access_log_class=SafeAccessLogger, handle_signals=False)
    await runner.setup()  # runs every backend's start-up check before the port opens
    try:
        address = config.server.address
        site: web.BaseSite
        if address.scheme == "unix":
            site = web.UnixSite(runner, address.path)
        else:
            site = web.TCPSite(runner, address.host or None, address.port)
        await site.start()
        log.info(
            "portal listening on %s; links in mails use %s (session.cookies[0].authelia_url; "
            "changing the listening address does not change it)",
            address,
            config.portal_url,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("portal stopping")
    finally:
        await runner.cleanup()


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """Return the event loop `serve` runs on and its name: uvloop's when it is installed (the
    `speed` extra, `pip install portal[speed]`), else asyncio's own ("asyncio")."""
    try:
        import uvloop  # noqa: PLC0415 - optional: only when the speed extra is installed
    except ImportError:
        return asyncio.new_event_loop, "asyncio"
    return uvloop.new_event_loop, "uvloop"


def _serve_command(args: argparse.Namespace) -> int:
    config, warnings = _load(args.config)
    configure_logging(config.log)
    for warning in [*warnings, *replica_warnings(config)]:
        log.warning("configuration: %s", warning)
    factory, loop_name = event_loop_factory()
    log.info("event loop: %s", loop_name)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(config))
    except OSError as exc:
        raise CliError(f"cannot listen on {config.server.address}: {exc.strerror}") from None
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if normalize_password(getpass.getpass("Confirm password: ")) != normalize_password(first):
            raise CliError("the passwords do not match")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def _hash_generate(args: argparse.Namespace) -> int:
    # As the portal writes passwords: the normalized form, which sign-in tries first.
    password = normalize_password(_read_password(args))
    if not password:
        raise CliError("the password must not be empty")
    try:
        digest = hash_password(password, PasswordConfig(algorithm=args.algorithm))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"Digest: {digest}")
    return 0


def _hash_validate(args: argparse.Namespace) -> int:
    try:
        # As sign-in checks: normalized, then as typed (a hash made by a tool that does not
        # normalize).
        matches = any(verify_password(c, args.digest) for c in password_candidates(args.password))
    except UnsupportedHashError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if matches:
        print("The password matches the digest.")
        return 0
    print("The password does not match the digest.", file=sys.stderr)
    return 1


def _schema_info(args: argparse.Namespace) -> int:
    config, _ = _load(args.config)
    for line in asyncio.run(schema_info(config)).lines():
        print(line)
    return 0


def _migrate_up(args: argparse.Namespace) -> int:
    config, _ = _load(args.config)
    before, after = asyncio.run(migrate_up(config))
    if before == after:
        print(f"Storage schema is already up to date (version {after})")
    else:
        print(f"Storage schema migration from {before} to {after} is complete")
    return 0


def _encryption_check(args: argparse.Namespace) -> int:
    config, _ = _load(args.config)
    store = storage_from_config(config)

    async def check() -> bool:
        try:
            await store.startup_check()
        except StartupCheckError as exc:
            if str(exc) == WRONG_KEY:
                return False
            raise
        finally:
            await store.close()
        return True

    if not asyncio.run(check()):
        raise CliError(
            "storage.encryption_key does not match the key this database was encrypted with"
        )
    print("Storage encryption key is valid.")
    return 0


def _new_encryption_key(args: argparse.Namespace) -> str:
    if args.new_encryption_key_file is not None:
        try:
            path: Path = args.new_encryption_key_file
            key = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.new_encryption_key_file}: {exc}") from None
    else:
        key = str(args.new_encryption_key)
    if len(key) < ENCRYPTION_KEY_MINIMUM:
        raise CliError(
            f"the new encryption key must be at least {ENCRYPTION_KEY_MINIMUM} characters"
        )
    return key


def _encryption_change_key(args: argparse.Namespace) -> int:
    config, _ = _load(args.config)
    new_key = _new_encryption_key(args)
    if new_key == config.storage.encryption_key.get_secret_value():
        raise CliError("the new encryption key must be different from the current one")
    count = asyncio.run(change_encryption_key(config, new_key))
    print(
        f"Storage encryption key changed: {count} secret(s) re-encrypted. Set "
        "storage.encryption_key to the new key before starting the portal again."
    )
    return 0


def _second_factor_delete(args: argparse.Namespace) -> int:
    config, _ = _load(args.config)
    configure_logging(config.log)  # the audit event goes where the portal's log goes
    username, totp, passkeys = asyncio.run(delete_second_factor(config, args.username))
    if username is None:
        raise CliError(f"no user '{args.username}'")
    if not totp and not passkeys:
        raise CliError(f"user '{username}' has no second factor registered")
    what = [
        *(["the TOTP second factor"] if totp else []),
        *([f"{passkeys} passkey{'s' if passkeys > 1 else ''}"] if passkeys else []),
    ]
    print(f"Deleted {' and '.join(what)} of user '{username}'; they were mailed about it.")
    return 0


def _admin_config(args: argparse.Namespace) -> Config:
    config, _ = _load(args.config)
    configure_logging(config.log)  # audit events go where the portal's log goes
    return config


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _users_list(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    users = asyncio.run(admin.list_users(config))
    if users is None:
        raise CliError("the configured user backend cannot list its users")
    if args.json:
        rows = [
            {
                "username": u.username,
                "display_name": u.display_name,
                "emails": list(u.emails),
                "groups": list(u.groups),
                "disabled": u.disabled,
            }
            for u in users
        ]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for u in users:
        print(
            f"{u.username}\t{u.display_name}\t{', '.join(u.emails) or '-'}\t"
            f"{', '.join(u.groups) or '-'}\t{'disabled' if u.disabled else 'enabled'}"
        )
    return 0


def _send_reset_link(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    try:
        outcome = asyncio.run(
            admin.send_reset_link(config, args.username, print_link=args.print_link)
        )
    except RateLimitedError:
        raise CliError(
            f"too many reset links for '{args.username}' lately; try again later"
        ) from None
    if outcome.user is None:
        raise CliError(f"no user '{args.username}'")
    if not outcome.queued:
        raise CliError(outcome.refusal)
    username = outcome.user.username
    if args.print_link:
        print(
            f"warning: this link sets the password of '{username}'; give it to them alone, "
            "over a channel you trust (it was not mailed and is not logged)",
            file=sys.stderr,
        )
        print(outcome.link)
        return 0
    print(f"Queued the reset mail for user '{username}' to their stored address.")
    return 0


def _regulation_list(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    bans = asyncio.run(admin.list_bans(config))
    if not bans:
        print("Nobody is banned.")
    for ban in bans:
        print(f"{ban.kind}\t{ban.subject}\tuntil {_when(ban.until)}")
    return 0


def _regulation_unban(args: argparse.Namespace) -> int:
    subject = args.subject.strip()
    if not subject:
        raise CliError("name a user or an address to unban")
    config = _admin_config(args)
    if not asyncio.run(admin.unban(config, subject)):
        raise CliError(f"'{subject}' has no failed sign-ins on record")
    print(f"Lifted the ban on '{subject}' and forgot its failed sign-ins.")
    return 0


def _sessions_list(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    sessions = asyncio.run(admin.list_sessions(config, args.username))
    if sessions is None:
        if args.username is None:
            raise CliError("the configured user backend cannot list its users; name one")
        raise CliError(f"no user '{args.username}'")
    if not sessions:
        print("No live sessions.")
    for username, listed in sessions:
        print(
            f"{username}\t{listed.id}\tcreated {_when(listed.created_at)}\t"
            f"last seen {_when(listed.last_seen_at)}\t{listed.ip or '-'}\t"
            f"{listed.user_agent or '-'}"
        )
    return 0


def _sessions_revoke(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    revoked = asyncio.run(admin.revoke_sessions(config, args.username))
    if revoked is None:
        raise CliError(f"no user '{args.username}'")
    username, count = revoked
    print(f"Ended {count} session{'' if count == 1 else 's'} of user '{username}'.")
    return 0


def _rand(args: argparse.Namespace) -> int:
    if not 1 <= args.length <= 4096:
        raise CliError("--length must be between 1 and 4096")
    print("".join(secrets.choice(ALPHANUMERIC) for _ in range(args.length)))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portal", description="Self-service password portal.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            "-c",
            type=Path,
            action="append",
            help="configuration file (repeat to merge several; default config/configuration.yml "
            "or $PORTAL_CONFIG)",
        )

    serve = commands.add_parser("serve", help="serve the portal")
    with_config(serve)
    serve.set_defaults(run=_serve_command)
    validate = commands.add_parser("validate-config", help="check the configuration and exit")
    with_config(validate)
    validate.set_defaults(run=_validate_config)

    storage = commands.add_parser("storage", help="the storage's schema").add_subparsers(
        dest="storage", required=True, metavar="COMMAND"
    )
    info = storage.add_parser("schema-info", help="show the schema version and its tables")
    with_config(info)
    info.set_defaults(run=_schema_info)
    migrate = storage.add_parser("migrate", help="schema migrations").add_subparsers(
        dest="migrate", required=True, metavar="COMMAND"
    )
    up = migrate.add_parser("up", help="migrate the schema to the latest version")
    with_config(up)
    up.set_defaults(run=_migrate_up)

    encryption = storage.add_parser(
        "encryption", help="the key secrets are encrypted with"
    ).add_subparsers(dest="encryption", required=True, metavar="COMMAND")
    check = encryption.add_parser("check", help="tell whether storage.encryption_key is right")
    with_config(check)
    check.set_defaults(run=_encryption_check)
    change = encryption.add_parser(
        "change-key", help="re-encrypt every secret with a new storage.encryption_key"
    )
    with_config(change)
    new_key = change.add_mutually_exclusive_group(required=True)
    new_key.add_argument("--new-encryption-key", metavar="KEY")
    new_key.add_argument("--new-encryption-key-file", metavar="PATH", type=Path)
    change.set_defaults(run=_encryption_change_key)

    users = commands.add_parser("users", help="administer users").add_subparsers(
        dest="users", required=True, metavar="COMMAND"
    )
    listing = users.add_parser("list", help="list the user backend's users")
    with_config(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(run=_users_list)
    reset_link = users.add_parser(
        "send-reset-link", help="mail a user the normal password-reset link (audited)"
    )
    with_config(reset_link)
    reset_link.add_argument("username", metavar="USER")
    reset_link.add_argument(
        "--print-link",
        action="store_true",
        help="print the link instead of mailing it, for delivery out of band (audited)",
    )
    reset_link.set_defaults(run=_send_reset_link)
    second_factor = users.add_parser("second-factor", help="users' second factors").add_subparsers(
        dest="second_factor", required=True, metavar="COMMAND"
    )
    delete = second_factor.add_parser(
        "delete", help="remove a user's TOTP device and passkeys (audited; the user is mailed)"
    )
    with_config(delete)
    delete.add_argument("username", metavar="USER")
    delete.set_defaults(run=_second_factor_delete)

    regulation = commands.add_parser(
        "regulation", help="bans after failed sign-ins"
    ).add_subparsers(dest="regulation", required=True, metavar="COMMAND")
    bans = regulation.add_parser("list", help="list the banned users and addresses")
    with_config(bans)
    bans.set_defaults(run=_regulation_list)
    lift = regulation.add_parser("unban", help="lift a user's or an address's ban (audited)")
    with_config(lift)
    lift.add_argument("subject", metavar="USER|ADDRESS")
    lift.set_defaults(run=_regulation_unban)

    sessions = commands.add_parser("sessions", help="signed-in sessions").add_subparsers(
        dest="sessions", required=True, metavar="COMMAND"
    )
    live = sessions.add_parser("list", help="list the live sessions of a user, or of everyone")
    with_config(live)
    live.add_argument("username", metavar="USER", nargs="?")
    live.set_defaults(run=_sessions_list)
    revoke = sessions.add_parser("revoke", help="end every session of a user (audited)")
    with_config(revoke)
    revoke.add_argument("username", metavar="USER")
    revoke.set_defaults(run=_sessions_revoke)

    crypto = commands.add_parser("crypto", help="hashes and random values").add_subparsers(
        dest="crypto", required=True, metavar="COMMAND"
    )
    hashes = crypto.add_parser("hash", help="password hashes").add_subparsers(
        dest="hash", required=True, metavar="COMMAND"
    )
    generate = hashes.add_parser("generate", help="hash a password")
    generate.add_argument("algorithm", choices=ALGORITHMS)
    generate.add_argument("--password", help="the password (read from stdin when omitted)")
    generate.set_defaults(run=_hash_generate)
    validate_hash = hashes.add_parser("validate", help="check a password against a hash")
    validate_hash.add_argument("--password", required=True)
    validate_hash.add_argument("digest", metavar="HASH")
    validate_hash.set_defaults(run=_hash_validate)
    rand = crypto.add_parser("rand", help="print a random alphanumeric string")
    rand.add_argument("--length", type=int, default=64)
    rand.set_defaults(run=_rand)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except (CliError, PortalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
