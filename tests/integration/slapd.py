"""A real OpenLDAP server (Debian's slapd) on free loopback ports, loaded with the project's test
directory: tests/fixtures/ldap/*.ldif (the password-policy overlay, the entries, the ACLs).

The slow part is done once per session by `build_template`: a cn=config directory made with
slapadd, then a slapd started on it so that the LDIF files go in online (10-ppolicy.ldif adds
the ppolicy overlay, and since OpenLDAP 2.5 the pwdPolicy schema lives inside that overlay, so
the policy entry in 20-directory.ldif only parses once it is running; slapmodify cannot do it).
What goes in is a parameter (`load`), so tests/compat builds one from Authelia's own files the
same way. Every path in the configuration is relative to the server's working directory, so a
test gets a pristine server by copying the template directory and starting slapd there (`spawn`).

slapd runs in the foreground as the current user (`-d none`: errors only, into slapd.log), on
unprivileged ports, with nothing outside its own directory, so it works as root and as not-root.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import trustme

from tests.integration.process import (
    HOST,
    accepts,
    free_port,
    read_log,
    spawn,
    stop_process,
    tail,
    wait_until_ready,
)

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
# The project's directory. Its files name BASE_DN and the {1}mdb database as written below.
DIRECTORY_LDIF = Path(__file__).resolve().parents[1] / "fixtures" / "ldap"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_PATH = "/usr/lib/ldap"

BACKEND = "mdb"
BASE_DN = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{BASE_DN}"  # the database rootdn; its password is Slapd.admin_password
CONFIG_DN = "cn=admin,cn=config"  # cn=config's rootdn, same password as ADMIN_DN
SERVICE_DN = f"cn=pwmanager,{BASE_DN}"
SERVICE_PASSWORD = "password"
USER_PASSWORD = "password"
POLICY_DN = f"cn=password,ou=policies,{BASE_DN}"
USER_DNS = {
    "john": f"cn=John Doe (external),ou=users,{BASE_DN}",
    "harry": f"cn=Harry Potter,ou=users,{BASE_DN}",
    "bob": f"cn=Bob Dylan,ou=users,{BASE_DN}",
    "james": f"cn=James Dean,ou=users,{BASE_DN}",
}
GROUP_DNS = {
    "dev": f"cn=dev,ou=groups,{BASE_DN}",
    "admins": f"cn=admins,ou=groups,{BASE_DN}",
}

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 30.0
INVALID_CREDENTIALS = 49  # the LDAP result code; the OpenLDAP tools exit with it
DB_DIR = "db"
TLS_DIR = "tls"
CONFIG_DIR = "slapd.d"
LOG_FILE = "slapd.log"

# An anonymous simple bind, LDAPv3, message id 1. Any BindResponse (SEQUENCE, id 1, then
# [APPLICATION 1]) means slapd is serving, even if cn=config was told to refuse anonymous binds.
ANONYMOUS_BIND = bytes.fromhex("300c020101600702010304008000")
BIND_RESPONSE = bytes.fromhex("020101") + b"\x61"


class SlapdError(RuntimeError):
    """slapd did not start, stopped unexpectedly, or an LDAP tool failed."""


def directory_ldif(name: str) -> str:
    """Read one of the project's directory files (tests/fixtures/ldap)."""
    return (DIRECTORY_LDIF / name).read_text(encoding="utf-8")


def config_ldif(admin_password: str) -> str:
    """Return the cn=config LDIF for slapadd -n0; every file path is relative to the workdir."""
    schemas = "\n".join(
        f"include: file://{SCHEMA_DIR / name}.ldif"
        for name in ("core", "cosine", "inetorgperson", "nis")
    )
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcTLSCACertificateFile: {TLS_DIR}/ca.pem
olcTLSCertificateFile: {TLS_DIR}/server.pem
olcTLSCertificateKeyFile: {TLS_DIR}/server.key

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_PATH}
olcModuleLoad: back_{BACKEND}

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcRootDN: {CONFIG_DN}
olcRootPW: {admin_password}

dn: olcDatabase={{1}}{BACKEND},cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}{BACKEND}
olcSuffix: {BASE_DN}
olcRootDN: {ADMIN_DN}
olcRootPW: {admin_password}
olcDbDirectory: {DB_DIR}
olcDbIndex: objectClass eq
olcDbIndex: uid,cn,mail,member eq
olcDbNoSync: TRUE
"""


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return an environment for the OpenLDAP tools without the caller's LDAP* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LDAP")}
    env.update(extra or {})
    return env


@dataclass
class Slapd:
    """One slapd process on its own directory: start, stop, and drive it with the OpenLDAP tools."""

    host: str
    port: int
    ldaps_port: int
    admin_password: str
    ca_pem: str
    workdir: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    # --- the process ------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """Return the CA certificate file, for LDAPTLS_CACERT."""
        return self.workdir / TLS_DIR / "ca.pem"

    @property
    def ca_directory(self) -> Path:
        """Return a folder holding only the CA certificate, for certificates_directory."""
        folder = self.workdir / "trusted"
        folder.mkdir(exist_ok=True)
        (folder / "ca.crt").write_text(self.ca_pem)
        return folder

    @property
    def log_file(self) -> Path:
        """Return the file slapd writes its errors to."""
        return self.workdir / LOG_FILE

    @property
    def running(self) -> bool:
        """Tell whether the slapd process is alive."""
        return self._process is not None and self._process.poll() is None

    def url(self, scheme: str = "ldap") -> str:
        """Return the ldap:// (StartTLS offered) or ldaps:// URL."""
        if scheme == "ldap":
            return f"ldap://{self.host}:{self.port}"
        if scheme == "ldaps":
            return f"ldaps://{self.host}:{self.ldaps_port}"
        raise ValueError(f"unknown scheme {scheme!r}")

    def start(self) -> None:
        """Start slapd and wait until it answers a bind on both ports."""
        if self.running:
            raise SlapdError("slapd is already running")
        listen = f"{self.url('ldap')}/ {self.url('ldaps')}/"
        self._log = self.log_file.open("ab")
        self._log_offset = self._log.tell()
        self._process = spawn(
            [SLAPD, "-h", listen, "-F", CONFIG_DIR, "-d", "none"], self.workdir, self._log
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop slapd (SIGTERM, then SIGKILL after a timeout) and wait for it; idempotent."""
        process, self._process = self._process, None
        log, self._log = self._log, None
        stop_process(process, STOP_TIMEOUT, log=log)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze slapd (SIGSTOP): connections stay open, requests get no answer until the
        block ends (SIGCONT), as with a server that is stuck."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start again: same ports, same data."""
        self.stop()
        self.start()

    def _wait_until_ready(self) -> None:
        # "slapd starting" comes after the listeners are bound and the databases opened, so the
        # probes below then reach this slapd, not whoever else might hold the port.
        assert self._process is not None
        wait_until_ready(
            self._process,
            lambda: (
                "slapd starting" in self.output()
                and self._answers_bind(self.port)
                and accepts(self.host, self.ldaps_port)
            ),
            timeout=START_TIMEOUT,
            interval=0.01,
            exited=lambda status: SlapdError(
                f"slapd exited with status {status} while starting"
                f" on {self.url('ldap')} and {self.url('ldaps')}:\n{self.log_tail()}"
            ),
            timed_out=lambda: SlapdError(
                f"slapd did not answer on {self.url('ldap')} and {self.url('ldaps')}"
                f" within {START_TIMEOUT}s:\n{self.log_tail()}"
            ),
        )

    def _answers_bind(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=1) as conn:
                conn.sendall(ANONYMOUS_BIND)
                return BIND_RESPONSE in conn.recv(64)
        except OSError:
            return False

    def output(self) -> str:
        """Return what slapd has written to its log since the last start."""
        return read_log(self.log_file, self._log_offset)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines slapd wrote since the last start."""
        return tail(self.output(), "slapd", lines)

    # --- the tools --------------------------------------------------------------------------

    def run_tool(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run an OpenLDAP client tool (ldapwhoami, ldapsearch...) trusting this server's CA.

        The caller's LDAP* variables are dropped; `env` adds to LDAPTLS_CACERT=<ca file> and
        LDAPTLS_REQCERT=demand. With check, a non-zero exit raises SlapdError with stderr.
        """
        tls = {"LDAPTLS_CACERT": str(self.ca_file), "LDAPTLS_REQCERT": "demand"}
        result = subprocess.run(
            list(args),
            input=input,
            capture_output=True,
            text=True,
            env=tool_env(tls | (env or {})),
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        if check and result.returncode != 0:
            raise SlapdError(
                f"{' '.join(args[:1])} exited with {result.returncode}:\n"
                f"{result.stderr.strip()}\n{result.stdout.strip()}"
            )
        return result

    def whoami(self, dn: str, password: str) -> bool:
        """Bind with ldapwhoami: True on success, False on invalid credentials, else raise."""
        result = self.run_tool(
            "ldapwhoami", "-x", "-H", self.url(), "-D", dn, "-w", password, check=False
        )
        if result.returncode == 0:
            return True
        if result.returncode == INVALID_CREDENTIALS:
            return False
        raise SlapdError(f"ldapwhoami exited with {result.returncode}: {result.stderr.strip()}")

    def modify(self, ldif: str, *, relax: bool = False) -> None:
        """Apply LDIF change records (with changetype) to the data, as ADMIN_DN.

        With relax, the Relax Rules control lets the rootdn write what the server keeps for
        itself (NO-USER-MODIFICATION attributes such as pwdChangedTime), to set up a past.
        """
        self.run_tool(
            "ldapmodify",
            "-x",
            *(("-e", "relax") if relax else ()),
            "-H",
            self.url(),
            "-D",
            ADMIN_DN,
            "-w",
            self.admin_password,
            input=ldif,
        )

    def add(self, ldif: str) -> None:
        """Add entries (records without changetype) to the data, as ADMIN_DN."""
        self.run_tool(
            "ldapadd",
            "-x",
            "-H",
            self.url(),
            "-D",
            ADMIN_DN,
            "-w",
            self.admin_password,
            input=ldif,
        )

    def modify_config(self, ldif: str) -> None:
        """Apply LDIF change records to cn=config, as CONFIG_DN."""
        self.run_tool(
            "ldapmodify",
            "-x",
            "-H",
            self.url(),
            "-D",
            CONFIG_DN,
            "-w",
            self.admin_password,
            input=ldif,
        )

    def require_client_certificate(self) -> None:
        """Make TLS (ldaps and StartTLS) demand a client certificate signed by the server's CA."""
        self.modify_config(
            "dn: cn=config\nchangetype: modify\nreplace: olcTLSVerifyClient\n"
            "olcTLSVerifyClient: demand\n"
        )

    def set_policy(self, **attrs: str | int) -> None:
        """Replace attributes of the default password policy (pwdMinLength=12, pwdInHistory=3)."""
        changes = []
        for name, value in attrs.items():
            text = ("TRUE" if value else "FALSE") if isinstance(value, bool) else str(value)
            changes.append(f"replace: {name}\n{name}: {text}\n-\n")
        self.modify(f"dn: {POLICY_DN}\nchangetype: modify\n{''.join(changes)}")

    def search(self, base: str, filt: str, attrs: list[str]) -> str:
        """Return ldapsearch's LDIF (unwrapped) as ADMIN_DN; "+" in attrs asks operational ones."""
        result = self.run_tool(
            "ldapsearch",
            "-x",
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-H",
            self.url(),
            "-D",
            ADMIN_DN,
            "-w",
            self.admin_password,
            "-b",
            base,
            filt,
            *attrs,
        )
        return result.stdout


@dataclass(frozen=True)
class SlapdTemplate:
    """A stopped, fully loaded server directory that `spawn` copies for each test."""

    path: Path
    admin_password: str
    ca_pem: str

    def spawn(self, workdir: Path) -> Slapd:
        """Copy the template to workdir and start a server there on fresh ports."""
        shutil.copytree(self.path, workdir, ignore=shutil.ignore_patterns("lock.mdb", LOG_FILE))
        return start_on_free_ports(workdir, self.admin_password, self.ca_pem)


def start_on_free_ports(workdir: Path, admin_password: str, ca_pem: str) -> Slapd:
    """Start slapd on workdir with new ports, trying others if a port got taken meanwhile."""
    for _attempt in range(3):
        server = Slapd(HOST, free_port(), free_port(), admin_password, ca_pem, workdir)
        if server.port == server.ldaps_port:
            continue
        try:
            server.start()
        except SlapdError:
            if "Address already in use" not in server.output():
                raise
            continue
        return server
    raise SlapdError(f"no free pair of ports for slapd in {workdir}")


def load_directory(server: Slapd) -> None:
    """Load the project's directory into a running, empty server."""
    server.modify_config(directory_ldif("10-ppolicy.ldif"))
    server.add(directory_ldif("20-directory.ldif"))
    server.modify_config(directory_ldif("30-acl.ldif"))


def build_template(
    path: Path, ca: trustme.CA, load: Callable[[Slapd], None] = load_directory
) -> SlapdTemplate:
    """Make a loaded server directory (once per session); `load` fills the running server."""
    admin_password = secrets.token_urlsafe(18)
    ca_pem = ca.cert_pem.bytes().decode()
    (path / CONFIG_DIR).mkdir(parents=True)
    (path / DB_DIR).mkdir(mode=0o700)
    tls = path / TLS_DIR
    tls.mkdir(mode=0o700)
    cert = ca.issue_cert(HOST, "localhost")
    ca.cert_pem.write_to_path(str(tls / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tls / "server.pem"))
    cert.private_key_pem.write_to_path(str(tls / "server.key"))
    (tls / "server.key").chmod(0o600)

    (path / "config.ldif").write_text(config_ldif(admin_password))
    subprocess.run(
        [SLAPADD, "-n0", "-F", CONFIG_DIR, "-l", "config.ldif"],
        cwd=path,
        capture_output=True,
        text=True,
        check=True,
    )
    (path / "config.ldif").unlink()  # holds the admin password in clear; slapd.d has it anyway

    server = start_on_free_ports(path, admin_password, ca_pem)
    try:
        load(server)
    finally:
        server.stop()
    server.log_file.unlink(missing_ok=True)
    return SlapdTemplate(path, admin_password, ca_pem)
