"""The `portal` command: serve, validate-config, storage, crypto, and the administrator's
users, regulation and sessions commands (portal.cli.admin)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import secrets
import signal
import string
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from portal.admin import change_encryption_key
from portal.app import create_app
from portal.checks import replica_warnings
from portal.cli.admin import add_admin_commands
from portal.cli.common import CliError, load, with_config
from portal.config import Config, PasswordConfig
from portal.config.storage import ENCRYPTION_KEY_MINIMUM
from portal.deps import storage_from_config
from portal.errors import (
    ConfigError,
    PortalError,
    StartupCheckError,
    UnsupportedHashError,
)
from portal.listen import listen
from portal.logs import SafeAccessLogger, configure_logging
from portal.storage.encryption import WRONG_KEY
from portal.storage.info import migrate_up, schema_info
from portal.users.hashing import hash_password, verify_password
from portal.users.passwords import normalize_password, password_candidates

ALGORITHMS = ("argon2", "sha2crypt", "pbkdf2", "bcrypt", "scrypt")
ALPHANUMERIC = string.ascii_letters + string.digits
log = logging.getLogger("portal")


def _validate_config(args: argparse.Namespace) -> int:
    config, warnings = load(args.config)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("Configuration is valid.")
    return 0


async def _serve(config: Config) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, access_log_class=SafeAccessLogger, handle_signals=False)
    try:
        # Runs every backend's start-up check (and opens the metrics' and authz listeners)
        # before the port opens; what it opened before a failure is closed in `finally`.
        await runner.setup()
        address = config.server.address
        unix = address.path if address.scheme == "unix" else None
        await listen(
            runner, "server.address", address, unix=unix, host=address.host, port=address.port
        )
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
    config, warnings = load(args.config)
    configure_logging(config.log)
    for warning in [*warnings, *replica_warnings(config)]:
        log.warning("configuration: %s", warning)
    factory, loop_name = event_loop_factory()
    log.info("event loop: %s", loop_name)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(config))
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
    config, _ = load(args.config)
    for line in asyncio.run(schema_info(config)).lines():
        print(line)
    return 0


def _migrate_up(args: argparse.Namespace) -> int:
    config, _ = load(args.config)
    before, after = asyncio.run(migrate_up(config))
    if before == after:
        print(f"Storage schema is already up to date (version {after})")
    else:
        print(f"Storage schema migration from {before} to {after} is complete")
    return 0


def _encryption_check(args: argparse.Namespace) -> int:
    config, _ = load(args.config)
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
    config, _ = load(args.config)
    new_key = _new_encryption_key(args)
    if new_key == config.storage.encryption_key.get_secret_value():
        raise CliError("the new encryption key must be different from the current one")
    count = asyncio.run(change_encryption_key(config, new_key))
    print(
        f"Storage encryption key changed: {count} secret(s) re-encrypted. Set "
        "storage.encryption_key to the new key before starting the portal again."
    )
    return 0


def _rand(args: argparse.Namespace) -> int:
    if not 1 <= args.length <= 4096:
        raise CliError("--length must be between 1 and 4096")
    print("".join(secrets.choice(ALPHANUMERIC) for _ in range(args.length)))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portal", description="Self-service password portal.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    add_admin_commands(commands)

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
