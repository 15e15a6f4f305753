"""One connection to the directory: TLS, connecting and binding, searches, and what came back.

ldap3 runs with its SYNC strategy, so everything here blocks: it is only ever called from a
worker thread (the pool's), never from the event loop. The TLS context comes from portal/tls.py
(settings.ssl_context: system CAs + certificates_directory, Authelia's `tls` keys).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from portal.config import LdapBackendConfig
from portal.config.authentication_backend.ldap_implementations import WHERE
from portal.errors import PasswordChangeRequiredError, StartupCheckError
from portal.users.ldap.ldap3_names import (
    AUTO_BIND_NONE,
    BASE,
    NONE,
    SIMPLE,
    SUBTREE,
    SYNC,
    Connection,
    LDAPCommunicationError,
    LDAPException,
    LDAPResponseTimeoutError,
    LDAPStartTLSError,
    Server,
    Tls,
)
from portal.users.ldap.passwords import PPOLICY_OID, bind_passwords, decode_ppolicy
from portal.users.ldap.settings import ssl_context, uses_tls
from portal.users.ldap.state import change_required

T = TypeVar("T")

# LDAP result codes the backend tells apart (RFC 4511 appendix A).
SUCCESS, SIZE_LIMIT_EXCEEDED, NO_SUCH_OBJECT, INVALID_CREDENTIALS = 0, 4, 32, 49
PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"  # RFC 2696 simple paged results
INSUFFICIENT_ACCESS, BUSY, UNAVAILABLE = 50, 51, 52

# Failures of the connection itself (as opposed to a request the server answered).
_CONNECTION_ERRORS = (
    LDAPCommunicationError,
    LDAPStartTLSError,
    LDAPResponseTimeoutError,
    OSError,
)

Controls = list[tuple[str, bool, bytes | None]]  # ldap3's (OID, criticality, value)


class Down(Exception):
    """The server could not be reached or dropped the connection; the message names no secret."""


class CannotConnect(Down):
    """No connection could be opened (refused, reset, timed out): nothing was sent on it yet."""


class BindRefused(Exception):
    """The server answered a bind with something other than success."""

    def __init__(self, code: int, description: str, answer: Answer | None = None) -> None:
        """Keep the result code, the description in words ("invalid credentials"), the answer."""
        super().__init__(description)
        self.code = code
        self.words = re.sub(r"(?<!^)(?=[A-Z])", " ", description).lower() or f"result {code}"
        self.answer = answer


@dataclass(frozen=True)
class Entry:
    """One entry a search found: its DN and raw attribute values."""

    dn: str
    raw: Mapping[str, Sequence[bytes]]  # attribute name in lower case -> values

    def values(self, attribute: str | None) -> list[str]:
        """Return an attribute's values as text (case-insensitive name; none for None)."""
        if not attribute:
            return []
        return [v.decode("utf-8", "replace") for v in self.raw.get(attribute.lower(), ())]


@dataclass(frozen=True)
class Answer:
    """What the server said to one request: result code, texts, entries, response controls."""

    code: int
    description: str
    message: str
    entries: tuple[Entry, ...] = ()
    ppolicy_error: int | None = None
    ppolicy_grace: int | None = None  # graceAuthNsRemaining: a grace login was used


@dataclass(frozen=True)
class Features:
    """What the RootDSE announces: extended operations, controls, vendor name and version."""

    extensions: frozenset[str]
    controls: frozenset[str]
    vendor: str


def answer_of(conn: Any, entries: tuple[Entry, ...] = ()) -> Answer:
    """Read the last result of an ldap3 connection, with its password-policy control."""
    result = conn.result or {}
    control = (result.get("controls") or {}).get(PPOLICY_OID) or {}
    value = control.get("value")
    error, grace = decode_ppolicy(bytes(value)) if value else (None, None)
    return Answer(
        code=int(result.get("result", -1)),
        description=str(result.get("description") or ""),
        message=str(result.get("message") or ""),
        entries=entries,
        ppolicy_error=error,
        ppolicy_grace=grace,
    )


def _entries(conn: Any) -> tuple[Entry, ...]:
    found = []
    for item in conn.response or ():
        if item.get("type") != "searchResEntry":
            continue  # referrals (searchResRef) are never followed unless permitted
        raw = {str(k).lower(): [bytes(v) for v in vs] for k, vs in item["raw_attributes"].items()}
        found.append(Entry(str(item["dn"]), raw))
    return tuple(found)


def _raise_if_change_required(answer: Answer) -> None:
    """Raise PasswordChangeRequiredError if a bind proved the password but demands a new one."""
    reason = change_required(
        code=answer.code,
        message=answer.message,
        ppolicy_error=answer.ppolicy_error,
        ppolicy_grace=answer.ppolicy_grace,
    )
    if reason is not None:
        # SECURITY: a bind that succeeded only to change the password (or used a grace login)
        # must not open a session; the state goes only to who proved the password.
        raise PasswordChangeRequiredError(reason)


def describe(answer: Answer) -> str:
    """Put an answer in words for a log or an error: "description: message"."""
    text = answer.description or f"result {answer.code}"
    return f"{text}: {answer.message}" if answer.message else text


def close(conn: Any) -> None:
    """Unbind and close a connection; never raises (it may be dead already). Blocks."""
    with contextlib.suppress(Exception):
        conn.unbind()
    # ldap3's unbind leaves the socket open when sending the request fails (a dropped connection).
    with contextlib.suppress(Exception):
        conn.socket.close()


class _Tls(Tls):  # type: ignore[misc]  # ldap3 is untyped
    """ldap3's Tls, wrapping sockets with our own SSLContext.

    ldap3 turns the context's hostname check off and calls ssl.match_hostname itself (deprecated,
    gone in Python 3.12, and it ignores tls.server_name); the context below checks the certificate
    and the name during the handshake, with the configured TLS versions.
    """

    def __init__(self, context: ssl.SSLContext, server_name: str) -> None:
        super().__init__()
        self._context = context
        self._server_name = server_name

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        """Wrap the connection's socket in TLS."""
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._server_name,
        )


class Connector:
    """Open bound connections to the configured directory and run requests on them (blocking)."""

    def __init__(
        self,
        config: LdapBackendConfig,
        certificates_directory: Path | None,
        logger: logging.Logger,
    ) -> None:
        """Prepare the server's address, TLS and timeouts; nothing connects yet.

        Raises StartupCheckError if the TLS trust or client key cannot be loaded.
        """
        self.address = str(config.address)
        self._config = config
        self._logger = logger
        scheme = config.address.scheme
        self.encrypted = scheme == "ldaps" or config.start_tls or scheme == "ldapi"
        self._start_tls = config.start_tls and scheme == "ldap"
        self._tls: _Tls | None = None
        self._tls_hint = ""
        if uses_tls(config) and not config.tls.certificate_chain:
            self._tls_hint = (
                " (a server that demands a client certificate needs tls.certificate_chain and "
                "tls.private_key)"
            )
        if uses_tls(config):
            if config.tls.skip_verify:
                # SECURITY: anyone on the path can read the service password and every write.
                logger.warning(
                    "%s.tls.skip_verify is on: the directory's certificate is not checked", WHERE
                )
            server_name = config.tls.server_name or config.address.host
            self._tls = _Tls(ssl_context(config.tls, certificates_directory), server_name)
        seconds = config.timeout.total_seconds()
        self._connect_timeout = seconds or None
        # ldap3 packs receive_timeout into SO_RCVTIMEO as an integer: a float would crash it.
        self._receive_timeout = max(1, math.ceil(seconds)) if seconds else None

    def ldap(self, call: Callable[[], T]) -> T:
        """Run one ldap3 call; turn a failure of the connection itself into Down."""
        try:
            return call()
        except _CONNECTION_ERRORS as exc:
            raise Down(f"{WHERE}: lost the connection to {self.address}: {exc}") from None

    def _server(self) -> Any:
        address = self._config.address
        if address.scheme == "ldapi":
            return Server(f"ldapi://{quote(address.path, safe='')}", get_info=NONE)
        return Server(
            address.host,
            port=address.port,
            use_ssl=address.scheme == "ldaps",
            tls=self._tls,
            get_info=NONE,  # the RootDSE is read explicitly, after StartTLS and the bind
            connect_timeout=self._connect_timeout,
        )

    def connect(self, dn: str, password: str, controls: Controls | None = None) -> Any:
        """Open a connection (StartTLS if configured) and bind as dn.

        Raises CannotConnect (nothing answered), Down (TLS failed), BindRefused (the server
        said no), or ldap3's LDAPException for a request it will not send.
        """
        # SECURITY: a simple bind with an empty password is an unauthenticated bind
        # (RFC 4513 5.1.2) that many servers answer with success: never send one.
        if not password:
            raise BindRefused(-1, "emptyPassword")
        conn = Connection(
            self._server(),
            user=dn,
            password=password,
            authentication=SIMPLE,
            client_strategy=SYNC,
            auto_bind=AUTO_BIND_NONE,
            raise_exceptions=False,
            receive_timeout=self._receive_timeout,
            auto_referrals=self._config.permit_referrals,  # ldap3 follows referrals by default
            return_empty_attributes=False,
        )
        try:
            conn.open()
            if self._start_tls:
                conn.start_tls()
            bound = conn.bind(controls=controls)
        except ssl.SSLError as exc:  # a certificate or protocol problem: retrying will not help
            close(conn)
            raise Down(
                f"{WHERE}: cannot connect to {self.address}: {exc}{self._tls_hint}"
            ) from None
        except _CONNECTION_ERRORS as exc:
            close(conn)
            raise CannotConnect(
                f"{WHERE}: cannot connect to {self.address}: {exc}{self._tls_hint}"
            ) from None
        except LDAPException:
            close(conn)
            raise
        if not bound:
            answer = answer_of(conn)
            close(conn)
            raise BindRefused(answer.code, answer.description, answer)
        return conn

    def search(
        self, conn: Any, base: str, search: str, attributes: list[str], size_limit: int
    ) -> Answer:
        """Search the subtree under base (no attributes: none returned); raise Down."""
        self.ldap(
            lambda: conn.search(
                base,
                search,
                search_scope=SUBTREE,
                attributes=attributes or ["1.1"],
                size_limit=size_limit,
                time_limit=self._receive_timeout or 0,
            )
        )
        return answer_of(conn, _entries(conn))

    def paged_search(
        self, conn: Any, base: str, search: str, attributes: list[str], page_size: int = 500
    ) -> Answer:
        """Search the subtree under base page by page (RFC 2696 simple paged results), so a
        directory's size limit does not cut the answer short; raise Down. The Answer holds
        every entry of every page and the last page's result code."""
        entries: list[Entry] = []
        cookie: bytes | None = None
        while True:
            page: Callable[[], Any] = partial(
                conn.search,
                base,
                search,
                search_scope=SUBTREE,
                attributes=attributes or ["1.1"],
                paged_size=page_size,
                paged_cookie=cookie,
                time_limit=self._receive_timeout or 0,
            )
            self.ldap(page)
            answer = answer_of(conn, _entries(conn))
            entries.extend(answer.entries)
            control = ((conn.result or {}).get("controls") or {}).get(PAGED_RESULTS_OID) or {}
            cookie = (control.get("value") or {}).get("cookie") or None
            if answer.code != SUCCESS or not cookie:
                return replace(answer, entries=tuple(entries))

    def read_rootdse(self, conn: Any) -> Answer:
        """Read the RootDSE's extensions, controls and vendor (RFC 4512 5.1); raise Down."""
        attributes = ["supportedExtension", "supportedControl", "vendorName", "vendorVersion"]
        self.ldap(
            lambda: conn.search("", "(objectClass=*)", search_scope=BASE, attributes=attributes)
        )
        return answer_of(conn, _entries(conn))

    def features(self, rootdse: Answer) -> Features:
        """Read what the RootDSE announces; raise StartupCheckError if it could not be read,
        unless permit_feature_detection_failure (then: nothing announced, and a warning)."""
        if rootdse.code == SUCCESS and rootdse.entries:
            entry = rootdse.entries[0]
            return Features(
                frozenset(entry.values("supportedExtension")),
                frozenset(entry.values("supportedControl")),
                " ".join(entry.values("vendorName") + entry.values("vendorVersion")),
            )
        reason = describe(rootdse) if rootdse.code != SUCCESS else "not readable"
        problem = f"{WHERE}: cannot read the RootDSE of {self.address}: {reason}"
        if not self._config.permit_feature_detection_failure:
            raise StartupCheckError(f"{problem} (permit_feature_detection_failure allows it)")
        self._logger.warning("%s; assuming no extensions or controls", problem)
        return Features(frozenset(), frozenset(), "")

    def _user_bind(self, dn: str, password: str) -> bool:
        # The password-policy control asks slapd why; AD says it in the diagnostic text.
        try:
            conn = self.connect(dn, password, [(PPOLICY_OID, False, None)])
        except BindRefused as refused:
            answer = refused.answer
            if answer is not None:
                _raise_if_change_required(answer)
            # invalidCredentials is the common case; others are worth a note.
            if refused.code != INVALID_CREDENTIALS:
                self._logger.info("%s: bind as %s refused: %s", WHERE, dn, refused.words)
            return False
        except LDAPException:  # a password ldap3 will not send (SASLprep)
            return False
        answer = answer_of(conn)
        close(conn)
        _raise_if_change_required(answer)
        return True

    def user_binds(self, dn: str, password: str) -> bool:
        """Bind as dn with each form of the password in turn (one from before may be as typed).

        False if every bind is refused; raises PasswordChangeRequiredError if one proved the
        password but the directory demands a new one, Down if the server cannot be reached.
        """
        return any(self._user_bind(dn, form) for form in bind_passwords(password))
