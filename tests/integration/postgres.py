"""A real PostgreSQL server (Debian's `postgresql`) on a free loopback port, thrown away after.

`PostgresServer.create()` runs initdb in a fresh directory and `start()` runs the server in the
foreground, its output in postgres.log. initdb and postgres refuse to run as root, so when the
tests run as root (CI, this machine) both run as the unprivileged system user `nobody` through
util-linux's setpriv, in a directory of their own under the system temporary directory (pytest's
own folders are root-only); as any other user they run as that user.

Authentication is scram-sha-256 for everyone (local socket and TCP): the superuser `postgres`
administers through psql, and the role `portal` (LOGIN, owner of the databases the tests make) is
what the portal signs in as. `create_database()` makes a fresh database from template0 for a test
that needs a store of its own. fsync is off: a crash loses nothing a test needs.

TLS is on (ssl=on, a server certificate for 127.0.0.1 from a CA of its own, `ca_directory` for
certificates_directory) but not required: a client chooses, as storage.postgres.tls does.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import trustme

from tests.integration.process import (
    HOST,
    free_port,
    read_log,
    spawn,
    stop_process,
    tail,
    wait_until_ready,
)

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
ROLE = "portal"
RUN_AS = "nobody"  # only when we are root: initdb and postgres refuse to run as root
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 30.0
LOG_FILE = "postgres.log"


class PostgresError(RuntimeError):
    """PostgreSQL is not installed, did not start, or a psql command failed."""


def pg_bin() -> Path:
    """Return the newest installed server's bin directory; PostgresError if there is none."""
    found = sorted(
        (path for path in PG_ROOT.glob("*/bin") if (path / "initdb").is_file()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresError(
            f"PostgreSQL is not installed (no {PG_ROOT}/<version>/bin/initdb): "
            "`make system-deps` installs Debian's postgresql"
        )
    return found[-1]


def _as_server_user() -> tuple[list[str], int | None, int | None]:
    """Return the command prefix that drops root, and the uid/gid to own the files (None: us)."""
    if os.geteuid() != 0:
        return [], None, None
    user = pwd.getpwnam(RUN_AS)
    prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    return prefix, user.pw_uid, user.pw_gid


@dataclass
class PostgresServer:
    """One throwaway cluster: its directory, port, passwords, and the process serving it."""

    workdir: Path
    port: int
    superuser_password: str
    password: str  # the `portal` role's
    ca_pem: str = ""
    host: str = HOST
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(cls) -> PostgresServer:
        """initdb a new cluster in a new directory (not started); PostgresError on failure."""
        prefix, uid, gid = _as_server_user()
        workdir = Path(tempfile.mkdtemp(prefix="portal-postgres-"))
        server = cls(workdir, free_port(), secrets.token_hex(16), secrets.token_hex(16))
        (workdir / "socket").mkdir()
        pwfile = workdir / "superuser.pw"
        pwfile.write_text(server.superuser_password + "\n")
        ca = trustme.CA()
        server.ca_pem = ca.cert_pem.bytes().decode()
        leaf = ca.issue_cert(HOST, "localhost")
        (workdir / "server.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        # PostgreSQL refuses a key others may read.
        key = workdir / "server.key"
        key.write_bytes(leaf.private_key_pem.bytes())
        key.chmod(0o600)
        if uid is not None and gid is not None:
            for path in (workdir, workdir / "socket", pwfile, workdir / "server.crt", key):
                os.chown(path, uid, gid)
        command = [
            *prefix,
            str(pg_bin() / "initdb"),
            "--pgdata",
            str(workdir / "data"),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        ]
        done = subprocess.run(  # noqa: S603 - our own arguments
            command, cwd=workdir, capture_output=True, timeout=TOOL_TIMEOUT, check=False
        )
        if done.returncode != 0:
            shutil.rmtree(workdir, ignore_errors=True)
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise PostgresError(f"initdb failed ({done.returncode}):\n{tail(output, 'initdb')}")
        return server

    @property
    def socket_directory(self) -> Path:
        """Return the directory holding the server's unix socket."""
        return self.workdir / "socket"

    @property
    def ca_directory(self) -> Path:
        """Return a folder holding only the server's CA certificate, for certificates_directory."""
        folder = self.workdir / "trusted"
        folder.mkdir(exist_ok=True)
        (folder / "ca.crt").write_text(self.ca_pem)
        return folder

    @property
    def running(self) -> bool:
        """Tell whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def address(self) -> str:
        """Return the address as storage.postgres.address takes it."""
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections; PostgresError otherwise."""
        if self.running:
            return
        prefix, _, _ = _as_server_user()
        self._log = (self.workdir / LOG_FILE).open("ab")
        command = [
            *prefix,
            str(pg_bin() / "postgres"),
            "-D",
            str(self.workdir / "data"),
            "-p",
            str(self.port),
            "-h",
            self.host,
            "-k",
            str(self.socket_directory),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
            "-c",
            "ssl=on",
            "-c",
            f"ssl_cert_file={self.workdir / 'server.crt'}",
            "-c",
            f"ssl_key_file={self.workdir / 'server.key'}",
        ]
        self._process = spawn(command, self.workdir, self._log, new_session=True)
        wait_until_ready(
            self._process,
            self._ready,
            timeout=START_TIMEOUT,
            interval=0.1,
            exited=lambda status: PostgresError(
                f"postgres exited with status {status}:\n{self.log_tail()}"
            ),
            timed_out=lambda: PostgresError(
                f"postgres did not accept connections within {START_TIMEOUT}s:\n{self.log_tail()}"
            ),
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected) and wait for it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
        stop_process(process, STOP_TIMEOUT, log=self._log, group=True)
        self._log = None

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the server's log."""
        return tail(read_log(self.workdir / LOG_FILE), "postgres", lines)

    def _ready(self) -> bool:
        done = subprocess.run(  # noqa: S603 - our own arguments
            [str(pg_bin() / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
            capture_output=True,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        return done.returncode == 0

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run SQL as the superuser over TCP and return psql's unaligned output."""
        env = {**os.environ, "PGPASSWORD": self.superuser_password}
        env = {key: value for key, value in env.items() if key not in ("PGHOST", "PGPORT")}
        command = [
            str(pg_bin() / "psql"),
            "--no-psqlrc",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-tA",
            "-c",
            sql,
        ]
        done = subprocess.run(  # noqa: S603 - our own arguments
            command, capture_output=True, timeout=TOOL_TIMEOUT, env=env, check=False
        )
        if done.returncode != 0:
            raise PostgresError(f"psql failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode().strip()

    def create_role(self) -> None:
        """Create the `portal` role (LOGIN, password `self.password`, no other rights)."""
        self.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh, empty database owned by `portal`; return its name."""
        name = name or f"test_{secrets.token_hex(6)}"
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE} TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still on it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server() -> PostgresServer:
    """Create, start and prepare (the `portal` role) a server; remove it if any step fails."""
    server = PostgresServer.create()
    try:
        server.start()
        server.create_role()
    except BaseException:
        server.remove()
        raise
    return server
