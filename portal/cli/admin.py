"""The administrator's commands: `portal users list / send-reset-link / second-factor delete`,
`portal regulation list / unban` and `portal sessions list / revoke` (what they do is
portal.admin's; here they are parsed and printed). Each prints one line on error (CliError) and
exits non-zero; every change is audited by portal.admin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from portal import admin
from portal.admin import delete_second_factor
from portal.cli.common import CliError, load, with_config
from portal.config import Config
from portal.errors import RateLimitedError
from portal.logs import configure_logging


def _second_factor_delete(args: argparse.Namespace) -> int:
    config, _ = load(args.config)
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
    config, _ = load(args.config)
    configure_logging(config.log)  # audit events go where the portal's log goes
    return config


def _shown(text: str) -> str:
    """Return text for one tab-separated cell on the admin's terminal: a backslash and every
    character str.isprintable refuses (tab, ESC, C1 controls, bidirectional overrides) escaped
    as Python writes them. SECURITY: a User-Agent, a username typed into the sign-in form or a
    directory's display name is the user's to choose; raw, it could shift the columns or send
    the terminal commands."""
    return "".join(c if c.isprintable() and c != "\\" else ascii(c)[1:-1] for c in text)


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
        cells = [u.username, u.display_name, ", ".join(u.emails), ", ".join(u.groups)]
        shown = "\t".join(_shown(cell) or "-" for cell in cells)
        print(f"{shown}\t{'disabled' if u.disabled else 'enabled'}")
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
        print(f"{ban.kind}\t{_shown(ban.subject)}\tuntil {_when(ban.until)}")
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
            f"{_shown(username)}\t{listed.id}\tcreated {_when(listed.created_at)}\t"
            f"last seen {_when(listed.last_seen_at)}\t{_shown(listed.ip) or '-'}\t"
            f"{_shown(listed.user_agent) or '-'}"
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


def add_admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the users, regulation and sessions commands to the `portal` parser's commands."""
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
