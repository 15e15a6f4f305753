"""A real Active Directory domain controller (Debian's Samba AD DC) on a loopback address.

`provision` runs `samba-tool domain provision` into a temporary directory (realm PORTAL.TEST,
no DNS, rfc2307 attributes), then `SambaDc.start` runs `samba -i -M single` in the foreground with
only the LDAP service. An AD DC's LDAP ports are fixed (389, 636 and the global catalog's 3268,
3269: Samba has no option to move them), so the server gets a loopback address of its own instead
of free ports: some 127.x.y.z where nothing listens (the whole of 127.0.0.0/8 is on `lo`), given
to Samba as `interfaces = 127.x.y.z/8` with `bind interfaces only`. Nothing else is started: no
KDC, SMB, DNS, NetBIOS or RPC server.

Samba generates a self-signed CA and server certificate in private/tls/ on first start
(CN = <host name>.portal.test, no subjectAltName); clients trust private/tls/ca.pem and check the
name SERVER_NAME, not the address.

`old password allowed period = 0`: with Samba's default of 60 minutes the previous password keeps
working for LDAP simple binds for an hour after a reset (see test_ldap_active_directory.py).

Root is required: provisioning chowns files and writes security.NTACL extended attributes
("Unable to chown a file on your filesystem.  You may not be running provision as root."), and
binding port 389 needs the privilege too ("ldapsrv failed to bind to ...:389 -
NT_STATUS_ACCESS_DENIED").

Cost, measured on Debian 12 (Samba 4.17): provisioning about 4 s, start about 1 s (TLS key
generation included), `samba-tool user create` about 0.3 s.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.integration.process import (
    accepts,
    read_log,
    spawn,
    stop_process,
    tail,
    wait_until_ready,
)

SAMBA = "/usr/sbin/samba"
SAMBA_TOOL = "/usr/bin/samba-tool"
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter Samba's Python bindings are installed for
AD_SCHEMA = Path("/usr/share/samba/setup/ad-schema")  # from the samba-ad-provision package
APT_PACKAGES = "samba-ad-dc samba-ad-provision"

REALM = "PORTAL.TEST"
DOMAIN = "PORTAL"
HOST_NAME = "DC1"
SERVER_NAME = f"{HOST_NAME}.{REALM}".lower()  # the CN of Samba's generated certificate
BASE_DN = "DC=portal,DC=test"
USERS_DN = f"CN=Users,{BASE_DN}"
ADMIN_USER = f"Administrator@{REALM.lower()}"  # a userPrincipalName: AD binds accept it
LDAP_PORTS = (389, 636, 3268, 3269)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 60.0
LOG_FILE = "samba.log"

# An anonymous simple bind, LDAPv3, message id 1; a BindResponse (id 1, then [APPLICATION 1])
# means the LDAP server is serving.
ANONYMOUS_BIND = bytes.fromhex("300c020101600702010304008000")
BIND_RESPONSE = bytes.fromhex("020101") + b"\x61"


class SambaError(RuntimeError):
    """Samba is not installed, could not be provisioned, did not start, or samba-tool failed."""


@dataclass(frozen=True)
class AdUser:
    """A user a test made on the domain controller."""

    name: str  # sAMAccountName
    password: str
    dn: str

    @property
    def mail(self) -> str:
        """Return the address create_user gave it."""
        return f"{self.name}@{REALM.lower()}"

    @property
    def upn(self) -> str:
        """Return its userPrincipalName (AD binds accept it as the name)."""
        return f"{self.name}@{REALM.lower()}"


def check_installed() -> None:
    """Raise SambaError naming what is missing to run a domain controller here."""
    missing = [p for p in (SAMBA, SAMBA_TOOL) if not os.access(p, os.X_OK)]
    if not AD_SCHEMA.is_dir():
        missing.append(str(AD_SCHEMA))
    if missing:
        raise SambaError(
            f"Samba AD DC is not installed (missing: {', '.join(missing)}); "
            f"apt-get install --no-install-recommends {APT_PACKAGES}"
        )
    if os.geteuid() != 0:
        raise SambaError(
            "a Samba AD DC can only be provisioned and run as root (it chowns files, writes "
            "security.NTACL attributes and binds port 389); run the integration tests as root"
        )


def strong_password() -> str:
    """Return a random password that meets AD's default complexity rules."""
    return f"Pw-{secrets.token_urlsafe(12)}-9a"


def free_loopback_address() -> str:
    """Return a 127.x.y.z address on which nothing accepts connections on AD's LDAP ports."""
    pick = random.SystemRandom()
    for _ in range(100):
        address = f"127.{pick.randint(64, 254)}.{pick.randint(0, 255)}.{pick.randint(1, 254)}"
        if not any(accepts(address, port) for port in LDAP_PORTS):
            return address
    raise SambaError("found no loopback address with AD's LDAP ports free")


def tool_env() -> dict[str, str]:
    """Return an environment without the caller's LDAP* and KRB5* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LDAP", "KRB5"))}


def provision(targetdir: Path, admin_password: str) -> Path:
    """Provision a new domain into targetdir; return its smb.conf."""
    check_installed()
    targetdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            SAMBA_TOOL,
            "domain",
            "provision",
            f"--realm={REALM}",
            f"--domain={DOMAIN}",
            f"--host-name={HOST_NAME}",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--use-rfc2307",
            f"--adminpass={admin_password}",
            f"--targetdir={targetdir}",
            "--option=server services = ldap",
            "--option=bind interfaces only = yes",
            "--option=interfaces = lo",  # replaced at start by the chosen loopback address
            f"--option=log file = {targetdir / 'log.%m'}",  # samba -i logs to stdout instead
        ],
        capture_output=True,
        text=True,
        env=tool_env(),
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise SambaError(f"samba-tool domain provision exited with {result.returncode}:\n{tail}")
    return targetdir / "etc" / "smb.conf"


@dataclass
class SambaDc:
    """One provisioned domain and its samba process: start, stop, and drive it with samba-tool."""

    workdir: Path
    admin_password: str
    host: str = field(default_factory=free_loopback_address)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    @classmethod
    def provisioned(cls, workdir: Path) -> SambaDc:
        """Provision a fresh domain in workdir (not started)."""
        password = strong_password()
        provision(workdir, password)
        return cls(workdir, password)

    # --- the process ------------------------------------------------------------------------

    @property
    def smb_conf(self) -> Path:
        """Return the domain's smb.conf."""
        return self.workdir / "etc" / "smb.conf"

    @property
    def ca_file(self) -> Path:
        """Return the CA certificate Samba generated (exists once the server has started)."""
        return self.workdir / "private" / "tls" / "ca.pem"

    @property
    def ca_pem(self) -> str:
        """Return the CA certificate as PEM text."""
        return self.ca_file.read_text()

    @property
    def ca_directory(self) -> Path:
        """Return a folder holding only the CA certificate, for certificates_directory."""
        folder = self.workdir / "trusted"
        folder.mkdir(exist_ok=True)
        (folder / "ca.crt").write_text(self.ca_pem)
        return folder

    @property
    def log_file(self) -> Path:
        """Return the file samba writes its output to."""
        return self.workdir / LOG_FILE

    @property
    def running(self) -> bool:
        """Tell whether the samba process is alive."""
        return self._process is not None and self._process.poll() is None

    def url(self, scheme: str = "ldaps") -> str:
        """Return the ldaps:// or ldap:// (StartTLS offered) URL."""
        if scheme not in ("ldap", "ldaps"):
            raise ValueError(f"unknown scheme {scheme!r}")
        return f"{scheme}://{self.host}"

    def start(self) -> None:
        """Start samba in the foreground and wait until it answers a bind over ldaps."""
        if self.running:
            raise SambaError("samba is already running")
        self._log = self.log_file.open("ab")
        self._log_offset = self._log.tell()
        self._process = spawn(
            [
                SAMBA,
                "--interactive",  # foreground, not a daemon; stops with its parent's SIGTERM
                "--model=single",  # one process, not a prefork pool
                f"--configfile={self.smb_conf}",
                f"--option=interfaces = {self.host}/8",
                # Samba's default (60 minutes) keeps the previous password valid for NTLM-style
                # checks, LDAP simple binds included: the old password would still sign in.
                # (samba-tool provision does not write this option into smb.conf.)
                "--option=old password allowed period = 0",
                # The default /run/samba/samba.pid is machine-wide: a second suite running at
                # the same time (another checkout) would find "samba is already running".
                f"--option=pid directory = {self.workdir}",
                "--debuglevel=1",
            ],
            self.workdir,
            self._log,
            env=tool_env(),
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop samba (SIGTERM, then SIGKILL after a timeout) and wait for it; idempotent."""
        process, self._process = self._process, None
        log, self._log = self._log, None
        stop_process(process, STOP_TIMEOUT, log=log)

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        wait_until_ready(
            self._process,
            lambda: self.ca_file.exists() and self._answers_bind_over_tls(),
            timeout=START_TIMEOUT,
            interval=0.05,
            exited=lambda status: SambaError(
                f"samba exited with status {status} while starting on "
                f"{self.host}:\n{self.log_tail()}"
            ),
            timed_out=lambda: SambaError(
                f"samba did not answer on {self.url()} within {START_TIMEOUT}s:\n{self.log_tail()}"
            ),
        )

    def tls_context(self) -> ssl.SSLContext:
        """Return a client context trusting Samba's CA and checking SERVER_NAME."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _answers_bind_over_tls(self) -> bool:
        try:
            with (
                socket.create_connection((self.host, 636), timeout=1) as raw,
                self.tls_context().wrap_socket(raw, server_hostname=SERVER_NAME) as conn,
            ):
                conn.sendall(ANONYMOUS_BIND)
                return BIND_RESPONSE in conn.recv(64)
        except (OSError, ssl.SSLError):
            return False

    def output(self) -> str:
        """Return what samba has written to its log since the last start."""
        return read_log(self.log_file, self._log_offset)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines samba wrote since the last start."""
        return tail(self.output(), "samba", lines)

    def remove(self) -> None:
        """Stop samba and delete the domain's directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- samba-tool --------------------------------------------------------------------------

    def tool(self, *args: str) -> str:
        """Run samba-tool on the domain's database (local, no network); return its output."""
        result = subprocess.run(
            [SAMBA_TOOL, *args, f"--configfile={self.smb_conf}"],
            capture_output=True,
            text=True,
            env=tool_env(),
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise SambaError(
                f"samba-tool {' '.join(args[:2])} exited with {result.returncode}:\n"
                f"{result.stderr.strip()}\n{result.stdout.strip()}"
            )
        return result.stdout

    def create_user(self, name: str, password: str, *options: str) -> str:
        """Create a user (CN = name, in CN=Users) with mail <name>@portal.test; return its DN.

        Its displayName is "<Name> Tester"; options go to `samba-tool user create` as they are.
        """
        self.tool(
            "user",
            "create",
            name,
            password,
            "--use-username-as-cn",
            f"--mail-address={name}@{REALM.lower()}",
            f"--given-name={name.capitalize()}",
            "--surname=Tester",
            *options,
        )
        return f"CN={name},{USERS_DN}"

    def apply_policy(self, user: str, *options: str) -> None:
        """Give one user a fine-grained password policy of its own (a PSO; options as for
        `samba-tool domain passwordsettings pso create`, the domain's values otherwise)."""
        pso = f"pso-{user}"
        self.tool("domain", "passwordsettings", "pso", "create", pso, "1", *options)
        self.tool("domain", "passwordsettings", "pso", "apply", pso, user)

    def age_password(self, user: AdUser, days: int) -> None:
        """Make the user's password look set `days` ago (pwdLastSet in the past).

        Over LDAP pwdLastSet takes only 0 and -1; the domain's own database, opened locally as
        samba-tool does, takes the password again with DSDB_CONTROL_PASSWORD_BYPASS_LAST_SET
        (the control Samba's upgrades use to keep an imported password's pwdLastSet).
        """
        result = subprocess.run(
            [
                SYSTEM_PYTHON,
                "-c",
                _AGE_PASSWORD,
                str(self.smb_conf),
                user.dn,
                user.password,
                str(days),
            ],
            capture_output=True,
            text=True,
            env=tool_env(),
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise SambaError(f"could not age the password of {user.dn}:\n{result.stderr[-2000:]}")

    def attributes(self, name: str, *attributes: str) -> dict[str, str]:
        """Return attributes of a user as the domain holds them (`samba-tool user show`)."""
        listing = self.tool("user", "show", name, f"--attributes={','.join(attributes)}")
        found = {}
        for line in listing.splitlines():
            key, sep, value = line.partition(": ")
            if sep and key in attributes:
                found[key] = value
        return found

    def create_group(self, name: str, *members: str) -> None:
        """Create a global security group holding the given sAMAccountNames."""
        self.tool("group", "add", name)
        if members:
            self.tool("group", "addmembers", name, ",".join(members))

    # --- a bind of our own (no ldap3, no portal code) ------------------------------------------

    def simple_bind(self, name: str, password: str) -> int:
        """Bind over ldaps (verifying Samba's certificate); return the LDAP result code."""
        request = _ber(0x30, _ber(0x02, b"\x01") + _ber(0x60, _bind_body(name, password)))
        with (
            socket.create_connection((self.host, 636), timeout=10) as raw,
            self.tls_context().wrap_socket(raw, server_hostname=SERVER_NAME) as conn,
        ):
            conn.sendall(request)
            reply = b""
            while len(reply) < 2 or len(reply) < _ber_total(reply):
                chunk = conn.recv(4096)
                if not chunk:
                    raise SambaError(f"the server closed the connection after {reply.hex()}")
                reply += chunk
        # SEQUENCE { messageID, [APPLICATION 1] { ENUMERATED resultCode, ... } }
        body = _ber_content(reply)
        op = body[_ber_total(body) :]  # skip the message id
        result = _ber_content(op)
        if op[0] != 0x61 or result[0] != 0x0A:
            raise SambaError(f"not a BindResponse: {reply.hex()}")
        return _ber_content(result)[0]


# Run by the system's python3 (Samba's own bindings): smb.conf, user DN, password, days.
_AGE_PASSWORD = """
import sys, time
import ldb
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
conf, dn, password, days = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lp = LoadParm()
lp.load(conf)
db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp)
message = ldb.Message(ldb.Dn(db, dn))
then = (int(time.time()) - days * 86400 + 11644473600) * 10**7
message["pwdLastSet"] = ldb.MessageElement(str(then), ldb.FLAG_MOD_REPLACE, "pwdLastSet")
message["clearTextPassword"] = ldb.MessageElement(
    password.encode("utf-16-le"), ldb.FLAG_MOD_REPLACE, "clearTextPassword")
db.modify(message, controls=["local_oid:1.3.6.1.4.1.7165.4.3.20:0"])
"""


def _bind_body(name: str, password: str) -> bytes:
    return (
        _ber(0x02, b"\x03")  # LDAPv3
        + _ber(0x04, name.encode())
        + _ber(0x80, password.encode())  # [0] simple
    )


def _ber(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _ber_header(data: bytes) -> tuple[int, int]:
    """Return (header size, content length) of the BER element at the start of data."""
    if len(data) < 2:
        return 2, 0x7FFFFFFF
    first = data[1]
    if first < 0x80:
        return 2, first
    count = first & 0x7F
    if len(data) < 2 + count:
        return 2 + count, 0x7FFFFFFF
    return 2 + count, int.from_bytes(data[2 : 2 + count], "big")


def _ber_total(data: bytes) -> int:
    header, length = _ber_header(data)
    return header + length


def _ber_content(data: bytes) -> bytes:
    header, length = _ber_header(data)
    return data[header : header + length]
