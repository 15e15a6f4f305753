"""A real Redis server (Debian's redis-server) on a free loopback port, in a temporary directory.

No persistence (no RDB snapshots, no AOF): a test's data lives as long as its server. Clients
authenticate: the default user with `requirepass`, and an ACL user `portal` (Redis 6+, the
`username` Authelia's session.redis takes) with its own password. The server runs in the
foreground as the current user, its output in redis.log; `stop` and `start` again on the same
port and directory stand for an outage (the data is gone afterwards, as after a real restart
without persistence). A missing redis-server is a failure, never a skip: `make system-deps`.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_SENTINEL = "/usr/bin/redis-sentinel"
REDIS_CLI = "/usr/bin/redis-cli"
MASTER_NAME = "portal-master"
USERNAME = "portal"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
LOG_FILE = "redis.log"


def _answers_ping(port: int, tls: ssl.SSLContext | None = None) -> bool:
    """Tell whether a Redis server answers PING on the port (NOAUTH counts: it is serving)."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as raw:
            if tls is None:
                raw.sendall(b"PING\r\n")
                reply = raw.recv(64)
            else:
                with tls.wrap_socket(raw, server_hostname=HOST) as wrapped:
                    wrapped.sendall(b"PING\r\n")
                    reply = wrapped.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


@dataclass
class RedisServer:
    """One redis-server process: where it listens and the credentials it takes."""

    directory: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))  # the default user's
    user_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))  # USERNAME's
    # With a CA: TLS only (no plain port), a certificate for 127.0.0.1 signed by it.
    tls_ca: trustme.CA | None = None
    extra: tuple[str, ...] = ()  # more arguments (`--replicaof ...` for a replica)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    host = HOST
    username = USERNAME

    @property
    def url(self) -> str:
        """A redis:// URL logging in as USERNAME, for clients in tests."""
        return f"redis://{USERNAME}:{self.user_password}@{HOST}:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers; raise RuntimeError with its log if not."""
        if not Path(REDIS_SERVER).exists():
            raise RuntimeError(f"{REDIS_SERVER} is missing: run 'make system-deps'")
        self.directory.mkdir(parents=True, exist_ok=True)
        log_path = self.directory / LOG_FILE
        offset = log_path.stat().st_size if log_path.exists() else 0
        self._log = log_path.open("ab")
        command = [REDIS_SERVER, "--bind", HOST, *self._listen()]
        command += [
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--requirepass",
            self.password,
            # One argument per ACL rule: redis-server joins them into one `user` line.
            *("--user", USERNAME, "on", f">{self.user_password}", "~*", "&*", "+@all"),
            *self.extra,
        ]
        self.process = spawn(command, self.directory, self._log)
        probe = None
        if self.tls_ca is not None:
            probe = ssl.create_default_context()
            self.tls_ca.configure_trust(probe)

        def exited(status: int) -> Exception:
            text = tail(read_log(log_path, offset), "redis-server")
            return RuntimeError(f"redis-server exited with {status}:\n{text}")

        def timed_out() -> Exception:
            text = tail(read_log(log_path, offset), "redis-server")
            return RuntimeError(f"redis-server did not answer within {START_TIMEOUT}s:\n{text}")

        try:
            wait_until_ready(
                self.process,
                lambda: _answers_ping(self.port, probe),
                timeout=START_TIMEOUT,
                interval=0.02,
                exited=exited,
                timed_out=timed_out,
            )
        except BaseException:
            self.stop()
            raise

    def info(self, section: str) -> str:
        """Return what INFO says of section (redis-cli, logged in as USERNAME); '' if it fails."""
        command = [REDIS_CLI, "-h", HOST, "-p", str(self.port), "--user", USERNAME]
        if self.tls_ca is not None:
            command += ["--tls", "--cacert", str(self.directory / "ca.pem")]
        command += ["--no-auth-warning", "--pass", self.user_password, "info", section]
        done = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
        return done.stdout if done.returncode == 0 else ""

    def _listen(self) -> list[str]:
        """Return the arguments for where it listens: the plain port, or TLS only."""
        if self.tls_ca is None:
            return ["--port", str(self.port)]
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            *_tls_files(self.tls_ca, self.directory),
        ]

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); harmless when it is not running."""
        process, log = self.process, self._log
        self.process, self._log = None, None
        stop_process(process, STOP_TIMEOUT, log=log)


def _tls_files(ca: trustme.CA, directory: Path) -> list[str]:
    """Write a certificate for 127.0.0.1 signed by ca, its key and ca into directory.

    Return the redis-server arguments that serve them; clients need no certificate.
    """
    certificate = ca.issue_cert(HOST, "localhost")
    paths = {name: directory / f"{name}.pem" for name in ("cert", "key", "ca")}
    certificate.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    certificate.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return [
        *("--tls-cert-file", str(paths["cert"]), "--tls-key-file", str(paths["key"])),
        *("--tls-ca-cert-file", str(paths["ca"]), "--tls-auth-clients", "no"),
    ]


@contextmanager
def running_redis(directory: Path, *, tls_ca: trustme.CA | None = None) -> Iterator[RedisServer]:
    """Start a Redis server in directory for the block; stop it afterwards, whatever happened."""
    server = RedisServer(directory, tls_ca=tls_ca)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RedisSentinel:
    """One redis-sentinel watching MASTER_NAME (quorum 1: it alone decides a failover).

    It logs in to the servers as USERNAME and takes its own password; it declares the master
    down after one second without an answer. Its configuration file is its own to rewrite.
    With a CA: it listens with TLS only and reaches the servers over TLS.
    """

    directory: Path
    master: RedisServer
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    tls_ca: trustme.CA | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    host = HOST

    def start(self) -> None:
        """Start the sentinel and wait until it answers; raise RuntimeError with its log if not."""
        if not Path(REDIS_SENTINEL).exists():
            raise RuntimeError(f"{REDIS_SENTINEL} is missing: run 'make system-deps'")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "sentinel.conf"
        listen = [f"port {self.port}"]
        if self.tls_ca is not None:
            # The same arguments as redis-server's, as configuration lines (`--a b` is `a b`).
            files = _tls_files(self.tls_ca, self.directory)
            pairs = [
                f"{key[2:]} {value}" for key, value in zip(files[::2], files[1::2], strict=True)
            ]
            listen = ["port 0", f"tls-port {self.port}", *pairs, "tls-replication yes"]
        conf.write_text(
            "\n".join(
                [
                    f"bind {HOST}",
                    *listen,
                    f"dir {self.directory}",
                    f"requirepass {self.password}",
                    f"sentinel monitor {MASTER_NAME} {HOST} {self.master.port} 1",
                    f"sentinel auth-user {MASTER_NAME} {USERNAME}",
                    f"sentinel auth-pass {MASTER_NAME} {self.master.user_password}",
                    f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
                    f"sentinel failover-timeout {MASTER_NAME} 5000",
                    "",
                ]
            )
        )
        log_path = self.directory / LOG_FILE
        self._log = log_path.open("ab")
        self.process = spawn([REDIS_SENTINEL, str(conf)], self.directory, self._log)
        probe = None
        if self.tls_ca is not None:
            probe = ssl.create_default_context()
            self.tls_ca.configure_trust(probe)

        def exited(status: int) -> Exception:
            text = tail(read_log(log_path), "redis-sentinel")
            return RuntimeError(f"redis-sentinel exited with {status}:\n{text}")

        def timed_out() -> Exception:
            return RuntimeError(
                f"redis-sentinel did not answer:\n{tail(read_log(log_path), 'redis-sentinel')}"
            )

        try:
            wait_until_ready(
                self.process,
                lambda: _answers_ping(self.port, probe),
                timeout=START_TIMEOUT,
                interval=0.02,
                exited=exited,
                timed_out=timed_out,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the sentinel; harmless when it is not running."""
        process, log = self.process, self._log
        self.process, self._log = None, None
        stop_process(process, STOP_TIMEOUT, log=log)


@dataclass
class SentinelSet:
    """A master, its replica (same credentials) and one sentinel watching them."""

    master: RedisServer
    replica: RedisServer
    sentinel: RedisSentinel


@contextmanager
def running_sentinel_set(
    directory: Path, *, tls_ca: trustme.CA | None = None
) -> Iterator[SentinelSet]:
    """Start a master, a replica of it and a sentinel; stop them all afterwards.

    With a CA, all three listen with TLS only (certificates for 127.0.0.1 signed by it) and
    reach each other over TLS (`tls-replication yes`).
    """
    replication = ("--tls-replication", "yes") if tls_ca is not None else ()
    master = RedisServer(directory / "master", tls_ca=tls_ca)
    replica = RedisServer(
        directory / "replica",
        password=master.password,
        user_password=master.user_password,
        tls_ca=tls_ca,
        extra=(
            *("--replicaof", HOST, str(master.port)),
            *("--masteruser", USERNAME, "--masterauth", master.user_password),
            *replication,
        ),
    )
    # The master may come back as a replica of the promoted one: it needs the same login. Its
    # first sync to the replica starts at once (Redis waits 5 seconds by default).
    master.extra = (
        *("--masteruser", USERNAME, "--masterauth", master.user_password),
        *("--repl-diskless-sync-delay", "0"),
        *replication,
    )
    sentinel = RedisSentinel(directory / "sentinel", master, tls_ca=tls_ca)
    try:
        master.start()
        replica.start()
        # The sentinel learns of the replica from the master, so only once it is in sync.
        wait_until_ready(
            replica.process,  # type: ignore[arg-type]  # started just above
            lambda: "master_link_status:up" in replica.info("replication"),
            timeout=START_TIMEOUT,
            interval=0.05,
            exited=lambda status: RuntimeError(f"the replica exited with {status}"),
            timed_out=lambda: RuntimeError("the replica did not sync with the master"),
        )
        sentinel.start()
        yield SentinelSet(master, replica, sentinel)
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()
