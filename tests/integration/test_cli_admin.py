"""`portal users list / send-reset-link`, `portal regulation list / unban` and `portal sessions
list / revoke`, run as an admin runs them: a real process on the tests' users file and a real
SQLite file (Redis for sessions), next to a running `portal serve` where it matters."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from portal.clock import SystemClock
from portal.config import Config, read_config
from portal.deps import sessions_from_config, storage_from_config
from portal.regulation import Regulator
from portal.session_cookies import stored_id
from portal.sessions import SessionStore
from portal.users.base import User
from tests.conftest import SESSION_SECRET, minimal_raw
from tests.integration.postgres import PostgresServer
from tests.integration.process import free_port
from tests.integration.redis_server import RedisServer
from tests.integration.slapd import Slapd
from tests.integration.test_cli import portal
from tests.integration.test_cli_storage import postgres_storage
from tests.web.test_reset_ldap import authelia_ldap_block

JOHN = User("john", "John Doe", ("john.doe@authelia.com",), ("admins", "dev"))
APP = "https://app.example.com/private"


def write_config(tmp_path: Path, **extra: Any) -> Path:
    raw = {**minimal_raw(tmp_path), **extra}
    path = tmp_path / "configuration.yml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(raw, handle)
    return path


def loaded(path: Path) -> Config:
    config, _ = read_config([path], {})
    return config


def disable(users_file: Path, username: str) -> None:
    text = users_file.read_text()
    marker = f"  {username}:\n"
    users_file.write_text(text.replace(marker, marker + "    disabled: true\n", 1))


def open_session(
    path: Path, user: User = JOHN, ip: str = "192.0.2.7", user_agent: str = "Firefox/140.0"
) -> str:
    """Sign user in as the portal does (a session in the configured store); return the cookie."""

    async def create() -> str:
        config = loaded(path)
        clock = SystemClock()
        storage = storage_from_config(config)
        records = sessions_from_config(config, clock) or storage
        await records.startup_check()
        try:
            store = SessionStore(records, clock, public_id_secret=SESSION_SECRET)
            cookie = config.session.cookies[0]
            return await store.create(user, cookie, remember_me=False, ip=ip, user_agent=user_agent)
        finally:
            await records.close()

    return asyncio.run(create())


def public_id(value: str) -> str:
    return SessionStore(object(), SystemClock(), public_id_secret=SESSION_SECRET).public_id(  # type: ignore[arg-type]
        stored_id(value)
    )


def fail_sign_ins(path: Path, username: str, ip: str, times: int = 3) -> None:
    async def record() -> None:
        config = loaded(path)
        storage = storage_from_config(config)
        await storage.startup_check()
        try:
            regulator = Regulator(storage, SystemClock(), config.regulation)
            for _ in range(times):
                await regulator.record_failure(username, ip)
        finally:
            await storage.close()

    asyncio.run(record())


def outbox(db: Path) -> list[tuple[str, dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT kind, payload FROM outbox ORDER BY id").fetchall()
    return [(kind, json.loads(payload)) for kind, payload in rows]


def links_recorded(db: Path, username: str) -> int:
    with sqlite3.connect(db) as conn:
        query = "SELECT count(*) FROM identity_verifications WHERE username = ?"
        return int(conn.execute(query, (username,)).fetchone()[0])


def audited(log: str, event: str) -> dict[str, object]:
    """Return the fields of the one audit event of that name in a text log (event= aside)."""
    [line] = [line for line in log.splitlines() if f" portal.audit: {event}" in line]
    fields = {k: json.loads(v) for k, v in _PAIR.findall(line.split(f": {event}", 1)[1])}
    fields.pop("event", None)  # older text lines repeated the name as a field
    return fields


_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


# --- users list ------------------------------------------------------------------------------


def test_users_list_shows_every_user_of_the_file_with_the_disabled_ones(
    tmp_path: Path, users_file: Path
) -> None:
    disable(users_file, "bob")
    config = str(write_config(tmp_path))

    text = portal("users", "list", "-c", config)
    as_json = portal("users", "list", "--json", "-c", config)

    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        "bob\tBob Dylan\tbob.dylan@authelia.com\tdev\tdisabled",
        "harry\tHarry Potter\tharry.potter@authelia.com\t-\tenabled",
        "james\tJames Dean\tjames.dean@authelia.com\t-\tenabled",
        "john\tJohn Doe\tjohn.doe@authelia.com\tadmins, dev\tenabled",
    ]
    assert as_json.returncode == 0, as_json.stderr
    users = json.loads(as_json.stdout)
    assert [u["username"] for u in users] == ["bob", "harry", "james", "john"]
    assert users[0] == {
        "username": "bob",
        "display_name": "Bob Dylan",
        "emails": ["bob.dylan@authelia.com"],
        "groups": ["dev"],
        "disabled": True,
    }
    assert "$6$" not in text.stdout + as_json.stdout  # no password hash, ever


def test_users_list_searches_the_directory(tmp_path: Path, slapd: Slapd) -> None:
    config = str(write_config(tmp_path, authentication_backend=authelia_ldap_block(slapd)))

    result = portal("users", "list", "--json", "-c", config)

    assert result.returncode == 0, result.stderr
    users = {u["username"]: u for u in json.loads(result.stdout)}
    assert sorted(users) == ["bob", "harry", "james", "john"]
    assert users["john"]["display_name"] == "John Doe"
    assert sorted(users["john"]["groups"]) == ["admins", "dev"]
    assert users["john"]["emails"] == ["john.doe@authelia.com"]


# --- users send-reset-link -------------------------------------------------------------------


def test_send_reset_link_queues_the_normal_reset_mail_and_audits_the_admin(
    tmp_path: Path, users_file: Path
) -> None:
    config = str(write_config(tmp_path))

    result = portal("users", "send-reset-link", "john", "-c", config)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Queued the reset mail for user 'john' to their stored address."
    ]
    [(kind, payload)] = outbox(tmp_path / "db")
    assert kind == "reset_password"  # the job step 1 of a reset queues, mailed by a portal
    assert (payload["identifier"], payload["actor"], payload["mail"]) == ("john", "admin", True)
    assert audited(result.stderr, "reset_link_queued") == {"username": "john", "actor": "admin"}


def test_a_running_portal_mails_the_link_to_the_stored_address_saying_an_admin_asked(
    tmp_path: Path, users_file: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path, server={"address": f"tcp://127.0.0.1:{port}"})
    with serving(config, port):
        result = portal("users", "send-reset-link", "john", "-c", str(config))
        assert result.returncode == 0, result.stderr
        mail = wait_for(lambda: _read(tmp_path / "notification.txt"), "the reset mail")

    assert "john.doe@authelia.com" in mail
    assert "/reset-password/step2?token=" in mail
    assert "An administrator of this portal asked for it" in mail
    assert links_recorded(tmp_path / "db", "john") == 1


def test_print_link_prints_a_working_link_with_a_warning_and_logs_no_token(
    tmp_path: Path, users_file: Path
) -> None:
    config = str(write_config(tmp_path))

    result = portal("users", "send-reset-link", "harry", "--print-link", "-c", config)

    assert result.returncode == 0, result.stderr
    [link] = result.stdout.splitlines()
    assert link.startswith("https://auth.example.com/reset-password/step2?token=")
    token = link.split("token=", 1)[1]
    assert "warning: this link sets the password of 'harry'" in result.stderr
    printed = audited(result.stderr, "reset_link_printed")
    assert (printed["username"], printed["actor"]) == ("harry", "admin")
    assert re.fullmatch(r"[0-9a-f]{16}", str(printed["jti_hash"]))
    assert token not in result.stderr  # SECURITY: the audit event and the log carry no token
    assert outbox(tmp_path / "db") == []  # nothing mailed
    assert links_recorded(tmp_path / "db", "harry") == 1  # the link is recorded: it works


def test_a_printed_link_opens_on_a_running_portal(tmp_path: Path, users_file: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, server={"address": f"tcp://127.0.0.1:{port}"})
    with serving(config, port):
        result = portal("users", "send-reset-link", "john", "--print-link", "-c", str(config))
        assert result.returncode == 0, result.stderr
        path = result.stdout.strip().removeprefix("https://auth.example.com")
        bogus = path[:-4] + ("AAAA" if not path.endswith("AAAA") else "BBBB")

        opened = open_link(port, path)
        refused = open_link(port, bogus)

    assert 'name="password_confirm"' in opened  # step 2's form for john
    assert 'name="password_confirm"' not in refused


def open_link(port: int, path: str) -> str:
    """Open a reset link as a browser does: the token moves into a cookie, then the page."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        moved = conn.getresponse()
        moved.read()
        assert moved.status == 303, moved.status
        cookies = "; ".join(
            value.split(";", 1)[0] for name, value in moved.getheaders() if name == "Set-Cookie"
        )
        conn.request("GET", moved.getheader("Location") or "", headers={"Cookie": cookies})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_unknown_disabled_or_unnamed_users_get_one_line_and_exit_1(
    tmp_path: Path, users_file: Path
) -> None:
    disable(users_file, "bob")
    config = str(write_config(tmp_path))

    unknown = portal("users", "send-reset-link", "nobody", "-c", config)
    disabled = portal("users", "send-reset-link", "bob", "-c", config)
    printed = portal("users", "send-reset-link", "bob", "--print-link", "-c", config)
    missing = portal("users", "send-reset-link", "-c", config)

    assert (unknown.returncode, unknown.stderr.splitlines()) == (1, ["error: no user 'nobody'"])
    assert disabled.returncode == 1
    assert disabled.stderr.splitlines()[-1:] == ["error: user 'bob' is disabled"]
    assert printed.returncode == 1 and printed.stdout == ""
    assert missing.returncode == 2  # argparse: usage and one error line
    assert missing.stderr.splitlines()[-1].endswith("the following arguments are required: USER")
    assert outbox(tmp_path / "db") == []
    for result in (unknown, disabled, printed, missing):
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("password_reset", "key"),
    [
        ({"disable": True}, "authentication_backend.password_reset.disable"),
        (
            {"custom_url": "https://reset.example.com/"},
            "authentication_backend.password_reset.custom_url",
        ),
    ],
)
def test_no_link_is_mailed_or_printed_when_the_portal_has_no_reset_page(
    tmp_path: Path, users_file: Path, password_reset: dict[str, Any], key: str
) -> None:
    # The link would lead to /reset-password/step2, which such a portal does not serve (404).
    backend = {"file": {"path": str(users_file)}, "password_reset": password_reset}
    config = str(write_config(tmp_path, authentication_backend=backend))

    mailed = portal("users", "send-reset-link", "john", "-c", config)
    printed = portal("users", "send-reset-link", "john", "--print-link", "-c", config)

    for result in (mailed, printed):
        assert result.returncode == 1 and result.stdout == ""
        [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert key in line and "no reset page" in line
        assert "Traceback" not in result.stderr
        assert "reset_link_" not in result.stderr  # nothing audited as done
    db = tmp_path / "db"  # refused before the storage is opened, or with nothing in it
    assert not db.exists() or (outbox(db), links_recorded(db, "john")) == ([], 0)


def test_the_per_account_limit_holds_for_mailed_and_printed_links_alike(
    tmp_path: Path, users_file: Path
) -> None:
    config = str(write_config(tmp_path))  # reset_password_identifier: 3 per 15 minutes

    allowed = [
        portal("users", "send-reset-link", "john", "-c", config),
        portal("users", "send-reset-link", "john", "--print-link", "-c", config),
        portal("users", "send-reset-link", "john", "-c", config),
    ]
    mailed = portal("users", "send-reset-link", "john", "-c", config)
    printed = portal("users", "send-reset-link", "john", "--print-link", "-c", config)

    assert [result.returncode for result in allowed] == [0, 0, 0]
    refusal = "error: too many reset links for 'john' lately; try again later"
    assert (mailed.returncode, mailed.stderr.splitlines()[-1:]) == (1, [refusal])
    assert (printed.returncode, printed.stdout, printed.stderr.splitlines()[-1:]) == (
        1,
        "",
        [refusal],
    )
    assert len(outbox(tmp_path / "db")) == 2


# --- regulation ------------------------------------------------------------------------------


def test_regulation_list_shows_the_bans_and_unban_lifts_them(
    tmp_path: Path, users_file: Path
) -> None:
    path = write_config(tmp_path)
    config = str(path)
    assert portal("regulation", "list", "-c", config).stdout.splitlines() == ["Nobody is banned."]
    fail_sign_ins(path, "John", "192.0.2.9")

    listed = portal("regulation", "list", "-c", config)
    lifted = portal("regulation", "unban", "john", "-c", config)
    after_user = portal("regulation", "list", "-c", config)
    lifted_ip = portal("regulation", "unban", "192.0.2.9", "-c", config)
    after_ip = portal("regulation", "list", "-c", config)
    again = portal("regulation", "unban", "john", "-c", config)

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["user", "john"], ["ip", "192.0.2.9"]]
    assert all(line.split("\t")[2].startswith("until 20") for line in lines)
    assert lifted.returncode == 0, lifted.stderr
    assert audited(lifted.stderr, "regulation_unbanned") == {
        "subject": "john",
        "failures": 3,
        "actor": "admin",
    }
    assert [line.split("\t")[0] for line in after_user.stdout.splitlines()] == ["ip"]
    assert lifted_ip.returncode == 0, lifted_ip.stderr
    assert after_ip.stdout.splitlines() == ["Nobody is banned."]
    assert again.returncode == 1
    assert again.stderr.splitlines() == ["error: 'john' has no failed sign-ins on record"]


def test_regulation_list_and_unban_on_postgres(
    tmp_path: Path, users_file: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    storage = minimal_raw(tmp_path)["storage"]
    storage = {
        "encryption_key": storage["encryption_key"],
        **postgres_storage(postgres_server, postgres_database, password=postgres_server.password),
    }
    path = write_config(tmp_path, storage=storage)
    fail_sign_ins(path, "harry", "2001:db8::0:1")

    listed = portal("regulation", "list", "-c", str(path))
    lifted = portal("regulation", "unban", "2001:db8::1", "-c", str(path))
    after = portal("regulation", "list", "-c", str(path))

    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [
        ["user", "harry"],
        ["ip", "2001:db8::1"],
    ]
    assert lifted.returncode == 0, lifted.stderr
    assert [line.split("\t")[:2] for line in after.stdout.splitlines()] == [["user", "harry"]]


def test_an_unbanned_user_signs_in_on_a_running_portal_at_once(
    tmp_path: Path, users_file: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path, server={"address": f"tcp://127.0.0.1:{port}"})
    with serving(config, port):
        fail_sign_ins(config, "john", "")
        assert sign_in(port, "john") == 401  # banned: the right password is refused

        lifted = portal("regulation", "unban", "john", "-c", str(config))
        assert lifted.returncode == 0, lifted.stderr

        assert sign_in(port, "john") == 200


# --- sessions --------------------------------------------------------------------------------


def test_sessions_list_shows_public_ids_never_the_session_or_the_cookie(
    tmp_path: Path, users_file: Path
) -> None:
    path = write_config(tmp_path)
    config = str(path)
    cookie = open_session(path)

    mine = portal("sessions", "list", "john", "-c", config)
    everyone = portal("sessions", "list", "-c", config)
    harrys = portal("sessions", "list", "harry", "-c", config)

    assert mine.returncode == 0, mine.stderr
    [line] = mine.stdout.splitlines()
    username, shown_id, created, seen, ip, agent = line.split("\t")
    assert (username, shown_id, ip, agent) == (
        "john",
        public_id(cookie),
        "192.0.2.7",
        "Firefox/140.0",
    )
    assert created.startswith("created 20") and seen.startswith("last seen 20")
    assert cookie not in mine.stdout and stored_id(cookie) not in mine.stdout
    assert everyone.stdout == mine.stdout
    assert harrys.stdout.splitlines() == ["No live sessions."]


def test_what_users_typed_reaches_the_admins_terminal_escaped(
    tmp_path: Path, users_file: Path
) -> None:
    # A User-Agent is the client's choice (HTTP lets a tab, C1 controls and bidirectional
    # overrides through); a display name may be the user's own in a directory. Printed raw they
    # would shift the columns or drive the admin's terminal (CSI, right-to-left override).
    users_file.write_text(
        users_file.read_text().replace('"John Doe"', '"John\\tDoe\\e]0;owned\\a"', 1)
    )
    path = write_config(tmp_path)
    open_session(path, user_agent="Firefox\t\x9b31mred\u202eevil")

    # A sign-in form's username is anyone's to type, and a failed one is recorded as typed.
    fail_sign_ins(path, "mallory\x1b[2J\u202e", "192.0.2.66")

    listed = portal("users", "list", "-c", str(path))
    sessions = portal("sessions", "list", "john", "-c", str(path))
    bans = portal("regulation", "list", "-c", str(path))

    [john] = [line for line in listed.stdout.splitlines() if line.startswith("john\t")]
    assert john.split("\t")[1] == "John\\tDoe\\x1b]0;owned\\x07"
    [line] = sessions.stdout.splitlines()
    assert line.split("\t")[-1] == "Firefox\\t\\x9b31mred\\u202eevil"
    assert "user\tmallory\\x1b[2j\\u202e\tuntil " in bans.stdout  # case-folded
    for output in (listed.stdout, sessions.stdout, bans.stdout):
        assert not any(c in output for c in "\x1b\x07\x9b\u202e")


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_a_revoke_is_refused_by_a_running_portal_within_a_second(
    tmp_path: Path, users_file: Path, request: pytest.FixtureRequest, store: str
) -> None:
    port = free_port()
    extra: dict[str, Any] = {
        "server": {"address": f"tcp://127.0.0.1:{port}"},
        "access_control": {"default_policy": "one_factor"},
    }
    if store == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        raw_session = minimal_raw(tmp_path)["session"]
        extra["session"] = {
            **raw_session,
            "redis": {
                "host": redis.host,
                "port": redis.port,
                "username": redis.username,
                "password": redis.user_password,
            },
        }
    config = write_config(tmp_path, **extra)
    with serving(config, port):
        johns = [open_session(config), open_session(config, ip="198.51.100.4")]
        harrys = open_session(config, User("harry", "Harry Potter", ("h@example.com",), ()))
        assert [auth_request(port, value) for value in [*johns, harrys]] == [200, 200, 200]

        revoked = portal("sessions", "revoke", "john", "-c", str(config))
        start = time.monotonic()
        while any(auth_request(port, value) == 200 for value in johns):
            assert time.monotonic() - start < 1.0, "a revoked session still opens after 1 s"
            time.sleep(0.05)

        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.splitlines() == ["Ended 2 sessions of user 'john'."]
        assert audited(revoked.stderr, "sessions_revoked") == {
            "username": "john",
            "count": 2,
            "actor": "admin",
        }
        assert auth_request(port, harrys) == 200  # other users keep theirs
        listed = portal("sessions", "list", "john", "-c", str(config))
        assert listed.stdout.splitlines() == ["No live sessions."]


def test_session_commands_refuse_unknown_users_and_bad_arguments_in_one_line(
    tmp_path: Path, users_file: Path
) -> None:
    config = str(write_config(tmp_path))

    unknown = portal("sessions", "revoke", "nobody", "-c", config)
    listed = portal("sessions", "list", "nobody", "-c", config)
    extra = portal("sessions", "revoke", "john", "harry", "-c", config)
    blank = portal("regulation", "unban", " ", "-c", config)

    assert (unknown.returncode, unknown.stderr.splitlines()) == (1, ["error: no user 'nobody'"])
    assert (listed.returncode, listed.stderr.splitlines()) == (1, ["error: no user 'nobody'"])
    assert extra.returncode == 2
    assert extra.stderr.splitlines()[-1].endswith("unrecognized arguments: harry")
    assert (blank.returncode, blank.stderr.splitlines()) == (
        1,
        ["error: name a user or an address to unban"],
    )


# --- a running portal --------------------------------------------------------------------------


class serving:  # noqa: N801 - used as `with serving(config, port):`
    """Run `portal serve` on config until the block ends; wait until it answers."""

    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> subprocess.Popen[str]:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "portal", "serve", "--config", str(self.config)],
            cwd=self.config.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        process = self.process
        wait_for(lambda: _status(self.port, "/api/health") == 200 or process.poll() is not None,
                 "the portal to listen")  # fmt: skip
        assert process.poll() is None, process.communicate()[1]
        return process

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.communicate(timeout=15)


def wait_for(check: Any, what: str, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds}s for {what}")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _status(
    port: int, path: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> int:
    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310 - loopback
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def auth_request(port: int, cookie: str) -> int:
    """Ask the portal what nginx's auth_request asks for APP with the session cookie."""
    return _status(
        port,
        "/api/authz/auth-request",
        {
            "X-Original-URL": APP,
            "X-Original-Method": "GET",
            "Cookie": f"portal_session={cookie}",
        },
    )


def sign_in(port: int, username: str) -> int:
    """Post the first factor as the sign-in page's script does; return the status."""
    body = json.dumps({"username": username, "password": "password"}).encode()
    return _status(
        port,
        "/api/firstfactor",
        {"Content-Type": "application/json", "Origin": "https://auth.example.com"},
        body,
    )
