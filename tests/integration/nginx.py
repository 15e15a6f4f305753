"""A real nginx (Debian's /usr/sbin/nginx) configured with the files admins copy from deploy/nginx/,
read as shipped.

Only addresses, the listening port, the certificate paths and the access log's path change, each
by replacing a value the shipped files hold on purpose (SUBSTITUTED below); a placeholder that no
file holds any more is an error, so the files and this fixture cannot drift apart. Server names
stay portal.example.com and app.example.com: clients resolve them to 127.0.0.1 themselves
(`Nginx.client`).

The work directory mirrors Debian's /etc/nginx, so the shipped relative includes
(`include snippets/proxy.conf;`) resolve as they do there:

    nginx.conf                  written here: the http block includes conf.d/*.conf
    conf.d/portal-http.conf     the "portal" upstream and the portal_reset limit_req zone
    conf.d/portal.conf          the portal's server block and the default_server
    conf.d/protected-app.conf   from protected-app.conf.example
    snippets/                   proxy.conf, portal-location.conf, portal-authrequest.conf
    tls/                        trustme's certificate for *.example.com and example.com

nginx runs in the foreground (`daemon off`) as the current user, with its pid file, logs and
temporary files in the work directory, in its own process group so `stop` can always end it.
"""

from __future__ import annotations

import os
import pwd
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import trustme
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.integration.process import (
    HOST,
    accepts,
    free_port,
    spawn,
    stop_process,
    tail,
    wait_until_ready,
)

NGINX = "/usr/sbin/nginx"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
DOMAIN = "example.com"
PORTAL_HOST = f"portal.{DOMAIN}"
APP_HOST = f"app.{DOMAIN}"
NAMES = (PORTAL_HOST, APP_HOST)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# Where each shipped file goes in the work directory (Debian's layout).
LAYOUT = {
    "conf.d/portal-http.conf": "portal-http.conf",
    "conf.d/portal.conf": "portal.conf",
    "conf.d/protected-app.conf": "protected-app.conf.example",
    "snippets/proxy.conf": "proxy.conf",
    "snippets/portal-location.conf": "portal-location.conf",
    "snippets/portal-authrequest.conf": "portal-authrequest.conf",
}

# The values the shipped files hold on purpose; these, and nothing else, are substituted.
SHIPPED_LISTEN = "listen 443 "
SHIPPED_PORTAL_ADDRESS = "server 127.0.0.1:9091;"
SHIPPED_APP_ADDRESS = "proxy_pass http://127.0.0.1:8080;"
SHIPPED_CERTIFICATE = "/etc/ssl/example.com/fullchain.pem"
SHIPPED_CERTIFICATE_KEY = "/etc/ssl/example.com/privkey.pem"
SHIPPED_ACCESS_LOG = "access_log /var/log/nginx/access.log "
# The authz listener's upstream and question, shipped commented out (portal-http.conf,
# portal-location.conf); uncommented for an nginx in front of server.authz_address.
SHIPPED_AUTHZ_UPSTREAM = (
    "#upstream portal_authz {\n#    server 127.0.0.1:9092;\n#    keepalive 64;\n#}\n"
)
SHIPPED_AUTHZ_QUESTION = "    proxy_pass http://portal/api/authz/auth-request;"
SUBSTITUTED = (
    SHIPPED_LISTEN,
    SHIPPED_PORTAL_ADDRESS,
    SHIPPED_APP_ADDRESS,
    SHIPPED_CERTIFICATE,
    SHIPPED_CERTIFICATE_KEY,
    SHIPPED_ACCESS_LOG,
)

CONF_FILE = "nginx.conf"
PID_FILE = "nginx.pid"
ERROR_LOG = "error.log"
ACCESS_LOG = "access.log"
OUTPUT_LOG = "nginx.out"


class NginxError(RuntimeError):
    """nginx refused its configuration, did not start, or stopped unexpectedly."""


def substitutions(
    https_port: int, portal: str, app: str, tls_dir: Path, authz: str | None = None
) -> dict[str, str]:
    """Map each shipped value to its test value.

    portal, app and authz are nginx upstream addresses: "127.0.0.1:8123" or
    "unix:/path/portal.sock"; with authz, nginx asks its auth_request questions there (the
    portal's authz listener, server.authz_address), through the shipped commented-out lines.
    """
    values = {
        SHIPPED_LISTEN: f"listen {HOST}:{https_port} ",
        SHIPPED_PORTAL_ADDRESS: f"server {portal};",
        SHIPPED_APP_ADDRESS: f"proxy_pass http://{app};",
        SHIPPED_CERTIFICATE: str(tls_dir / "cert.pem"),
        SHIPPED_CERTIFICATE_KEY: str(tls_dir / "key.pem"),
        # The work directory's one access log (main_conf's), which the tests read.
        SHIPPED_ACCESS_LOG: f"access_log {tls_dir.parent / ACCESS_LOG} ",
    }
    if authz is not None:
        values[SHIPPED_AUTHZ_UPSTREAM] = (
            f"upstream portal_authz {{\n    server {authz};\n    keepalive 64;\n}}\n"
        )
        values[SHIPPED_AUTHZ_QUESTION] = (
            "    proxy_pass http://portal_authz/api/authz/auth-request;"
        )
    return values


def render(shipped: dict[str, str], values: dict[str, str]) -> dict[str, str]:
    """Return every shipped file's text with the values replaced; each one must occur somewhere."""
    rendered = {}
    for name, text in shipped.items():
        for old, new in values.items():
            text = text.replace(old, new)
        rendered[name] = text
    for old in values:
        if not any(old in text for text in shipped.values()):
            raise NginxError(f"no file in {DEPLOY} holds the placeholder {old!r} any more")
    return rendered


def main_conf(workdir: Path) -> str:
    """Return the top nginx.conf: everything in the work directory, the http block as Debian's."""
    # As root, nginx would run its workers as nobody, who cannot enter pytest's 0700 tmp dirs.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = workdir / "temp"
    return f"""\
{user}worker_processes 1;
error_log {workdir / ERROR_LOG} notice;

events {{
    worker_connections 256;
}}

http {{
    access_log {workdir / ACCESS_LOG};
    client_body_temp_path {temp / "client_body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};

    include conf.d/*.conf;
}}
"""


class ExampleResolver(AbstractResolver):
    """Resolve portal.example.com and app.example.com to the loopback address, and nothing else."""

    def __init__(self, names: tuple[str, ...] = NAMES) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return 127.0.0.1 for a test name; refuse any other, so nothing leaves the machine."""
        if host not in self.names:
            raise OSError(f"{host} is not one of the test names {self.names}")
        return [
            ResolveResult(
                hostname=host,
                host=HOST,
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        """Nothing to release."""


@dataclass
class Nginx:
    """One nginx process serving the shipped configuration from its own work directory."""

    workdir: Path
    https_port: int
    ca: trustme.CA
    portal: str
    app: str
    authz: str | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _output: IO[bytes] | None = field(default=None, init=False, repr=False)

    # --- what clients need ------------------------------------------------------------------

    def url(self, host: str, path: str = "/") -> str:
        """Return https://<host>:<https_port><path>, e.g. url(APP_HOST, "/secret")."""
        return f"https://{host}:{self.https_port}{path}"

    @property
    def ca_pem(self) -> str:
        """Return the PEM of the CA that signed nginx's certificate."""
        return self.ca.cert_pem.bytes().decode()

    @property
    def ca_file(self) -> Path:
        """Return the CA certificate file, for clients that want a path (cafile=, SSL_CERT_FILE)."""
        return self.workdir / "tls" / "ca.pem"

    def ssl_context(self) -> ssl.SSLContext:
        """Return a client context that trusts this nginx's CA only, hostname checked."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, **kwargs: Any) -> aiohttp.ClientSession:
        """Open an aiohttp session that reaches the example names here, with SNI and verification.

        Use it as `async with nginx.client() as http:`; kwargs go to ClientSession.
        """
        connector = aiohttp.TCPConnector(resolver=ExampleResolver(), ssl=self.ssl_context())
        return aiohttp.ClientSession(connector=connector, **kwargs)

    # --- files ------------------------------------------------------------------------------

    @property
    def conf_file(self) -> Path:
        """Return the top configuration file."""
        return self.workdir / CONF_FILE

    @property
    def error_log(self) -> Path:
        """Return nginx's error log."""
        return self.workdir / ERROR_LOG

    def write_config(self) -> None:
        """Write the work directory: certificate, rendered shipped files, nginx.conf."""
        tls = self.workdir / "tls"
        tls.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ca.cert_pem.write_to_path(str(tls / "ca.pem"))
        cert = self.ca.issue_cert(f"*.{DOMAIN}", DOMAIN)
        cert.private_key_pem.write_to_path(str(tls / "key.pem"))
        (tls / "key.pem").chmod(0o600)
        (tls / "cert.pem").write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))

        shipped = {target: (DEPLOY / source).read_text() for target, source in LAYOUT.items()}
        values = substitutions(self.https_port, self.portal, self.app, tls, self.authz)
        for target, text in render(shipped, values).items():
            path = self.workdir / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (self.workdir / "temp").mkdir(exist_ok=True)
        self.conf_file.write_text(main_conf(self.workdir))

    def command(self, *extra: str) -> list[str]:
        """Return the nginx command line for this work directory, plus extra arguments."""
        pid = self.workdir / PID_FILE
        return [
            NGINX,
            "-p",
            f"{self.workdir}/",
            "-c",
            str(self.conf_file),
            "-g",
            f"daemon off; pid {pid};",
            *extra,
        ]

    def check_config(self) -> subprocess.CompletedProcess[str]:
        """Run `nginx -t` on the written configuration; the caller reads returncode and stderr."""
        return subprocess.run(
            self.command("-t"), capture_output=True, text=True, timeout=30, check=False
        )

    # --- the process ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Tell whether the nginx master process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def master_pid(self) -> int | None:
        """Return the master's pid while it runs."""
        return self._process.pid if self._process is not None else None

    def worker_pids(self) -> list[int]:
        """Return the pids of the master's children (its workers), read from /proc."""
        master = self.master_pid
        if master is None:
            return []
        children = Path(f"/proc/{master}/task/{master}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except FileNotFoundError:
            return []

    def start(self) -> None:
        """Start nginx in the foreground and wait until it serves https on its port."""
        if self.running:
            raise NginxError("nginx is already running")
        for name in (PID_FILE, ERROR_LOG):
            (self.workdir / name).unlink(missing_ok=True)
        self._output = (self.workdir / OUTPUT_LOG).open("wb")
        # its own process group: stop() can end the workers too
        self._process = spawn(self.command(), self.workdir, self._output, new_session=True)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL to its whole group after a timeout); idempotent."""
        process, self._process = self._process, None
        output, self._output = self._output, None
        stop_process(process, STOP_TIMEOUT, log=output, group=True)

    def _wait_until_ready(self) -> None:
        # nginx writes its pid file after it has bound its listening sockets, so once the file
        # names our process, a connection to the port reaches this nginx and nobody else; the
        # worker that will answer is forked just after.
        pid_file = self.workdir / PID_FILE
        process = self._process
        assert process is not None
        wait_until_ready(
            process,
            lambda: (
                pid_file.exists()
                and pid_file.read_text().strip() == str(process.pid)
                and bool(self.worker_pids())
                and accepts(HOST, self.https_port)
            ),
            timeout=START_TIMEOUT,
            interval=0.01,
            exited=lambda status: NginxError(
                f"nginx exited with status {status} while starting on"
                f" port {self.https_port}:\n{self.log_tail()}"
            ),
            timed_out=lambda: NginxError(
                f"nginx did not listen on port {self.https_port} within {START_TIMEOUT}s:\n"
                f"{self.log_tail()}"
            ),
        )

    def output(self) -> str:
        """Return what nginx wrote since it last started: its stderr and its error log."""
        texts = []
        for name in (OUTPUT_LOG, ERROR_LOG):
            try:
                texts.append((self.workdir / name).read_text(errors="replace"))
            except FileNotFoundError:
                continue
        return "\n".join(texts)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines nginx wrote."""
        return tail(self.output(), "nginx", lines)


def configure_nginx(
    workdir: Path, ca: trustme.CA, *, portal: str, app: str, authz: str | None = None
) -> Nginx:
    """Write a configuration in workdir for a fresh port without starting nginx."""
    nginx = Nginx(workdir, free_port(), ca, portal, app, authz)
    nginx.write_config()
    return nginx


def start_nginx(
    workdir: Path, ca: trustme.CA, *, portal: str, app: str, authz: str | None = None
) -> Nginx:
    """Configure and start nginx in front of portal and app ("127.0.0.1:port" or "unix:/path").

    Neither needs to be listening yet: nginx connects to them per request. If the port got
    taken meanwhile, try another one.
    """
    for _attempt in range(3):
        nginx = configure_nginx(workdir, ca, portal=portal, app=app, authz=authz)
        try:
            nginx.start()
        except NginxError:
            if "Address already in use" not in nginx.output():
                raise
            continue
        return nginx
    raise NginxError(f"no free port for nginx in {workdir}")


@contextmanager
def running_nginx(
    workdir: Path, ca: trustme.CA, *, portal: str, app: str, authz: str | None = None
) -> Iterator[Nginx]:
    """Run nginx for the duration of the block; it is stopped whatever happens."""
    nginx = start_nginx(workdir, ca, portal=portal, app=app, authz=authz)
    try:
        yield nginx
    finally:
        nginx.stop()
