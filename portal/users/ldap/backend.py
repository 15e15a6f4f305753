"""An LDAP directory as the user backend (Authelia's `authentication_backend.ldap`).

Lookups run as the service account over a small pool of bound connections (pool.py); a password
check binds as the user on a fresh connection; a new password goes through the Password Modify
extended operation when the server announces it (Active Directory: `unicodePwd`; otherwise a
`{CRYPT}` SHA-512 `userPassword`), sent with the password-policy control so that the directory's
own rules come back as sentences a person understands (passwords.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from passlib.hash import sha512_crypt

from portal.config import LdapBackendConfig
from portal.config.authentication_backend.ldap_implementations import WHERE
from portal.errors import (
    BackendUnavailableError,
    PasswordRejectedError,
    PasswordWriteError,
    StartupCheckError,
    UserBackendError,
)
from portal.password_hashing import HashingQueue, shared_queue
from portal.users.base import User
from portal.users.ldap.connection import (
    BUSY,
    INSUFFICIENT_ACCESS,
    NO_SUCH_OBJECT,
    SIZE_LIMIT_EXCEEDED,
    SUCCESS,
    UNAVAILABLE,
    Answer,
    Connector,
    Down,
    Entry,
    Features,
    answer_of,
    describe,
)
from portal.users.ldap.groups import groups_of_all
from portal.users.ldap.ldap3_names import MODIFY_REPLACE
from portal.users.ldap.passwords import (
    AD_POLICY_HINTS_OID,
    AD_POLICY_HINTS_VALUE,
    PASSWORD_MODIFY_OID,
    PPOLICY_OID,
    SHA512_CRYPT_ROUNDS,
    policy_sentence,
    prepare_password,
    unicode_pwd,
)
from portal.users.ldap.pool import LdapPool
from portal.users.ldap.settings import (
    effective_settings,
    fill_filter,
    is_dn,
    memberof_fragments,
    same_dn_key,
)
from portal.users.ldap.state import read_state, state_attributes
from portal.users.passwords import normalize_password

_AD_NEEDS_TLS = (
    "Active Directory only accepts a new password over an encrypted connection; use an "
    "ldaps:// address or start_tls, or password resets will fail"
)


# --- the backend -------------------------------------------------------------------------------


class LdapUserBackend:
    """Find users in an LDAP directory, check their passwords and write new ones."""

    def __init__(
        self,
        config: LdapBackendConfig,
        *,
        certificates_directory: Path | None = None,
        logger: logging.Logger | None = None,
        page_size: int = 500,
        hashing: HashingQueue | None = None,
    ) -> None:
        """Check the configuration and prepare TLS; nothing connects until it is needed.

        certificates_directory: Authelia's top-level key, whose certificates join the system's
        trust store for the directory's certificate. page_size: entries per page of list_users'
        paged search. hashing: the queue the {CRYPT} fallback's hash waits in (default: the
        process's shared queue, portal/password_hashing.py). Raise StartupCheckError on what
        cannot work.
        """
        self._config = config
        self._hashing = hashing or shared_queue()
        self._page_size = page_size
        # One logger for the whole package, named as before the split into modules.
        self._logger = logger or logging.getLogger("portal.users.ldap")
        self._settings = effective_settings(config)
        self._address = str(config.address)
        self._ad = config.implementation == "activedirectory"
        if self._ad and "(!(pwdlastset=0))" in self._settings.users_filter.lower():
            self._logger.warning(
                "%s.users_filter leaves out users who must change their password "
                "((!(pwdLastSet=0)), as Authelia's default does), so they cannot reset it; the "
                "portal reads pwdLastSet itself and gives them no session until they do: remove "
                "that clause",
                WHERE,
            )
        # effective_settings refused a section without a service account and its password.
        assert config.user and config.password is not None  # noqa: S101 - see just above
        self._connector = Connector(config, certificates_directory, self._logger)
        if self._ad and not self._connector.encrypted:
            self._logger.warning("%s: %s", WHERE, _AD_NEEDS_TLS)
        service_dn, service_password = config.user, config.password.get_secret_value()
        self._pool = LdapPool.from_config(
            config, lambda: self._connector.connect(service_dn, service_password), self._logger
        )
        self._features: Features | None = None
        self._warned: set[str] = set()

    @property
    def pool(self) -> LdapPool:
        """Return the connection pool (its `waits` and `wait_seconds` feed the metrics)."""
        return self._pool

    # --- the UserBackend protocol -------------------------------------------------------------

    async def startup_check(self) -> None:
        """Connect and bind as the service account, read the RootDSE, try the search filters."""
        try:
            rootdse, users, groups = await self._pool.run(self._probe)
        except (BackendUnavailableError, UserBackendError) as exc:
            raise StartupCheckError(str(exc)) from None
        self._features = self._connector.features(rootdse)
        s = self._settings
        for key, base, answer in (
            ("users_filter", s.users_base, users),
            ("groups_filter", s.groups_base, groups),
        ):
            if answer is None or answer.code in (SUCCESS, SIZE_LIMIT_EXCEEDED):
                continue
            if answer.code == NO_SUCH_OBJECT:
                raise StartupCheckError(
                    f"{WHERE}: the search base {base!r} does not exist (check base_dn and "
                    f"additional_{key.split('_')[0]}_dn)"
                )
            raise StartupCheckError(f"{WHERE}.{key}: the search failed: {describe(answer)}")
        self._logger.info(
            "%s: connected to %s (%s); password changes use %s",
            WHERE,
            self._address,
            self._features.vendor or "unknown vendor",
            self._write_method(),
        )

    async def close(self) -> None:
        """Unbind every pooled connection and stop the worker threads."""
        await self._pool.close()

    async def get_user(self, identifier: str) -> User | None:
        """Find a user by whatever users_filter matches {input} against (username, mail)."""
        entry = await self._find(identifier, self._user_attributes())
        if entry is None:
            return None
        return await self._user_of(entry, identifier)

    async def list_users(self) -> list[User]:
        """Return every user users_filter matches whatever {input} is, sorted by username (the
        UserLister role).

        The filter is users_filter with {input} replaced by `*`: `(uid={input})` becomes the
        presence filter `(uid=*)`, the rest of the filter (object class, AD's disabled-account
        clauses) still applies, as Authelia documents users_filter. One paged search (RFC 2696),
        then one paged groups search for every user where groups_filter allows it (groups.py),
        else each user's groups search. Raises UserBackendError or BackendUnavailableError.
        """
        s = self._settings
        search = fill_filter(s.users_filter, {}, datetime.now(UTC), {"input": "*"})
        attributes = self._user_attributes()
        answer = await self._pool.run(
            lambda c: self._connector.paged_search(
                c, s.users_base, search, attributes, self._page_size
            )
        )
        if answer.code not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
            raise self._search_failed("users", answer)
        groups = await groups_of_all(s, answer.entries, self._all_groups)
        users = []
        for entry in answer.entries:
            names = entry.values(s.username)
            known = None if groups is None else groups[entry.dn]
            user = await self._user_of(entry, names[0] if names else "", known)
            if user is not None:
                users.append(user)
        return sorted(users, key=lambda u: u.username)

    def _user_attributes(self) -> list[str]:
        s = self._settings
        attributes = [s.username, s.display_name, s.mail, *state_attributes(self._ad)]
        if s.group_search_mode == "memberof" and s.member_of:
            attributes.append(s.member_of)
        return attributes

    async def _user_of(
        self, entry: Entry, identifier: str, groups: tuple[str, ...] | None = None
    ) -> User | None:
        """Build the User an entry describes (its groups given, or searched), or None if it has
        no single username."""
        s = self._settings
        names = entry.values(s.username)
        if not names:
            self._logger.warning("%s: %s has no %s; ignoring it", WHERE, entry.dn, s.username)
            return None
        if len(names) > 1:
            # SECURITY: one account, one name. Second factors, sessions, regulation and reset
            # links are keyed by the username, so a second value would be a second account
            # without the first one's TOTP device (a reset under it skipped the code). Authelia
            # refuses such an entry too (ldap_user_provider.go: "must be a single value
            # attribute").
            self._logger.warning(
                "%s: %s has %d values for %s but the attribute must be a single value attribute;"
                " ignoring it",
                WHERE,
                entry.dn,
                len(names),
                s.username,
            )
            return None
        username = names[0]
        display = entry.values(s.display_name)
        disabled, state = read_state(entry.values, active_directory=self._ad, now=datetime.now(UTC))
        return User(
            username=username,
            display_name=display[0] if display else username,
            emails=tuple(entry.values(s.mail)),
            groups=await self._groups(entry, identifier, username) if groups is None else groups,
            disabled=disabled,
            state=state,
        )

    async def check_password(self, username: str, password: str) -> bool:
        """Bind as the user with the password on a fresh connection; False if it is refused."""
        # SECURITY: an empty password would make an unauthenticated bind, which "succeeds".
        if not password:
            return False
        entry = await self._find(username, [])
        if self._pool.closed:
            return False
        # SECURITY: an unknown user is bound too, as a DN nobody has (a fresh random name under
        # the users' base, refused by the directory like a wrong password): without it the
        # answer for an unknown name comes one connection and one bind sooner, which tells who
        # exists (OWASP WSTG-IDNT-04: account enumeration through response times).
        dn = (
            entry.dn
            if entry is not None
            else f"cn={secrets.token_hex(16)},{self._settings.users_base}"
        )
        try:
            bound = await self._pool.in_thread(self._connector.user_binds, dn, password)
        except Down as exc:
            raise BackendUnavailableError(str(exc)) from None
        return bound and entry is not None

    async def set_password(self, username: str, password: str) -> None:
        """Write a new password the way the directory wants it; raise on any refusal."""
        if self._config.implementation == "activedirectory" and not self._connector.encrypted:
            # SECURITY: the new password would cross the network in clear (AD refuses it too).
            raise PasswordWriteError(f"{WHERE}: {_AD_NEEDS_TLS}")
        # Normalizing can be slow for long input (NFKC expands some characters 18-fold).
        prepared = await asyncio.to_thread(lambda: prepare_password(normalize_password(password)))
        if not prepared:
            raise PasswordRejectedError(["The password must not be empty."])
        entry = await self._find(username, [])
        if entry is None:
            raise PasswordWriteError(f"{WHERE}: no user {username!r} in the directory")
        features = await self._known_features()
        method = self._write_method()
        if method == "userPassword" and "crypt" not in self._warned:
            self._warned.add("crypt")
            self._logger.warning(
                "%s: %s does not announce the Password Modify operation; writing userPassword as "
                "a {CRYPT} SHA-512 hash, without the server's own password policy",
                WHERE,
                self._address,
            )
        digest = ""
        if method == "userPassword":
            # In the one bounded queue every password hash waits in, not the LDAP pool's thread.
            digest = await self._hashing.run(
                sha512_crypt.using(rounds=SHA512_CRYPT_ROUNDS).hash, prepared
            )
        controls: list[tuple[str, bool, bytes | None]] = [(PPOLICY_OID, False, None)]
        if method == "unicodePwd" and AD_POLICY_HINTS_OID in features.controls:
            controls.append((AD_POLICY_HINTS_OID, False, AD_POLICY_HINTS_VALUE))

        def write(conn: Any) -> Answer:
            if method == "unicodePwd":
                changes = {"unicodePwd": [(MODIFY_REPLACE, [unicode_pwd(prepared)])]}
                self._connector.ldap(lambda: conn.modify(entry.dn, changes, controls=controls))
            elif method == "passwordModify":
                new = prepared.encode("utf-8")  # bytes: ldap3 sends them as they are
                self._connector.ldap(
                    lambda: conn.extend.standard.modify_password(
                        user=entry.dn, new_password=new, controls=controls
                    )
                )
            else:
                # SECURITY: only ever a hash; a clear-text userPassword is readable by many.
                crypt = {"userPassword": [(MODIFY_REPLACE, ["{CRYPT}" + digest])]}
                self._connector.ldap(lambda: conn.modify(entry.dn, crypt, controls=controls))
            return answer_of(conn)

        # Not on a reused connection: a write sent on a dead one must not be retried blindly.
        answer = await self._pool.run(write, reuse=False)
        if answer.code == SUCCESS:
            self._logger.info("%s: new password written for %s (%s)", WHERE, entry.dn, method)
            return
        sentence = policy_sentence(answer.ppolicy_error, answer.message, answer.code)
        if sentence is not None:
            self._logger.info(
                "%s: the directory refused the new password for %s: %s",
                WHERE,
                entry.dn,
                describe(answer),
            )
            raise PasswordRejectedError([sentence])
        if answer.code in (BUSY, UNAVAILABLE):
            raise BackendUnavailableError(f"{WHERE}: {self._address} is {answer.description}")
        hint = " (the service account may not write passwords)"
        raise PasswordWriteError(
            f"{WHERE}: the directory refused the new password for {entry.dn}: {describe(answer)}"
            + (hint if answer.code == INSUFFICIENT_ACCESS else "")
        )

    async def healthy(self) -> bool:
        """Tell whether the directory answers the service account right now (a RootDSE read).

        One attempt to connect, no pooling.retries: a load balancer's probe wants the state now.
        """
        try:
            answer = await self._pool.run(self._connector.read_rootdse, retry=False)
        except (BackendUnavailableError, UserBackendError):
            return False
        return answer.code == SUCCESS

    async def password_state(self, username: str) -> str | None:
        """Return a digest of what changes with the password; None for an unknown user."""
        # Operational attributes only come back when asked for by name.
        attributes = ["pwdChangedTime", "pwdLastSet", "userPassword"]
        entry = await self._find(username, attributes)
        if entry is None:
            return None
        parts = [entry.dn]
        for name in attributes:
            parts.extend(f"{name}:{value.hex()}" for value in entry.raw.get(name.lower(), ()))
        if len(parts) == 1 and "state" not in self._warned:
            self._warned.add("state")
            self._logger.warning(
                "%s: the service account cannot read pwdChangedTime (OpenLDAP ppolicy), pwdLastSet "
                "(Active Directory) or userPassword of %s; grant it read access to one of them, or "
                "reset links will not die when a password is changed elsewhere",
                WHERE,
                entry.dn,
            )
        # SECURITY: the parts may hold the stored hash; only a digest of them leaves this module.
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    async def clear_lockout(self, username: str) -> bool:
        """End a lockout from failed binds: AD's lockoutTime=0 (MS-ADA1 2.373: zero is "not
        locked out"; MS-SAMR 3.1.1.8.3: writing it also resets badPwdCount).

        OpenLDAP's ppolicy needs nothing: it deletes pwdAccountLockedTime and pwdFailureTime with
        every password change (ppolicy.c, ppolicy_modify), so this returns False there.
        """
        if not self._ad:
            return False
        entry = await self._find(username, [])
        if entry is None:
            return False
        changes = {"lockoutTime": [(MODIFY_REPLACE, ["0"])]}

        def unlock(conn: Any) -> Answer:
            self._connector.ldap(lambda: conn.modify(entry.dn, changes))
            return answer_of(conn)

        answer = await self._pool.run(unlock, reuse=False)
        if answer.code != SUCCESS:
            hint = " (the service account needs write access to lockoutTime)"
            raise UserBackendError(
                f"{WHERE}: the directory refused to unlock {entry.dn}: {describe(answer)}"
                + (hint if answer.code == INSUFFICIENT_ACCESS else "")
            )
        self._logger.info("%s: lockout of %s cleared after a password reset", WHERE, entry.dn)
        return True

    # --- lookups ------------------------------------------------------------------------------

    async def _find(self, identifier: str, attributes: list[str]) -> Entry | None:
        """Search users_filter for the identifier: the one entry it names, or None."""
        if not identifier or not _is_utf8(identifier):
            return None
        s = self._settings
        search = fill_filter(s.users_filter, {"input": identifier}, datetime.now(UTC))
        answer = await self._pool.run(
            lambda c: self._connector.search(c, s.users_base, search, attributes, 2)
        )
        if answer.code not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
            raise self._search_failed("users", answer)
        if len(answer.entries) > 1:
            # SECURITY: a reset link must never reach the wrong person: pick nobody.
            self._logger.warning(
                "%s: users_filter matches several entries for %r; refusing to pick one",
                WHERE,
                identifier,
            )
            return None
        return answer.entries[0] if answer.entries else None

    async def _groups(self, entry: Entry, identifier: str, username: str) -> tuple[str, ...]:
        """Search groups_filter for the user's groups; their group_name values, in order.

        memberof mode (Authelia's getUserGroupsRequestMemberOf): the filter gets the user's
        memberOf values through {memberof:dn}/{memberof:rdn}, and only entries whose DN is one
        of those values count. No memberOf value: no groups, and no search.
        """
        s = self._settings
        if not s.groups_filter:
            return ()
        member_of: list[str] = []
        if s.group_search_mode == "memberof":
            # A value that is not a DN can name no entry: it counts as no value.
            member_of = [dn for dn in entry.values(s.member_of) if is_dn(dn)]
            if not member_of:
                return ()
        values = {"input": identifier, "username": username, "dn": entry.dn}
        fragments = memberof_fragments(member_of, s.distinguished_name)
        search = fill_filter(s.groups_filter, values, datetime.now(UTC), fragments)
        answer = await self._pool.run(
            lambda c: self._connector.search(c, s.groups_base, search, [s.group_name], 0)
        )
        if answer.code not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
            raise self._search_failed("groups", answer)
        groups = answer.entries
        if s.group_search_mode == "memberof":
            mine = {same_dn_key(dn) for dn in member_of}
            groups = tuple(group for group in groups if same_dn_key(group.dn) in mine)
        names = [n for group in groups for n in group.values(s.group_name)]
        return tuple(dict.fromkeys(names))

    async def _all_groups(self, search: str, attributes: list[str]) -> list[Entry]:
        """Run one paged groups search under groups_base; its entries in the server's order."""
        s = self._settings
        answer = await self._pool.run(
            lambda c: self._connector.paged_search(
                c, s.groups_base, search, attributes, self._page_size
            )
        )
        if answer.code not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
            raise self._search_failed("groups", answer)
        return list(answer.entries)

    def _search_failed(self, what: str, answer: Answer) -> Exception:
        if answer.code in (BUSY, UNAVAILABLE):
            return BackendUnavailableError(f"{WHERE}: {self._address} is {answer.description}")
        return UserBackendError(f"{WHERE}: the {what} search failed: {describe(answer)}")

    async def _known_features(self) -> Features:
        if self._features is None:
            rootdse = await self._pool.run(self._connector.read_rootdse)
            try:
                self._features = self._connector.features(rootdse)
            except StartupCheckError as exc:
                raise PasswordWriteError(str(exc)) from None
        return self._features

    def _write_method(self) -> str:
        if self._config.implementation == "activedirectory":
            return "unicodePwd"
        if self._features is not None and PASSWORD_MODIFY_OID in self._features.extensions:
            return "passwordModify"
        return "userPassword"

    # --- worker-thread side ------------------------------------------------------------------

    def _probe(self, conn: Any) -> tuple[Answer, Answer, Answer | None]:
        """Read the RootDSE and run both filters once, with input that matches nobody."""
        s = self._settings
        nobody = f"portal-startup-check-{secrets.token_hex(8)}"
        now = datetime.now(UTC)
        users_filter = fill_filter(s.users_filter, {"input": nobody}, now)
        users = self._connector.search(conn, s.users_base, users_filter, [], 1)
        groups = None
        if s.groups_filter:
            values = {"input": nobody, "username": nobody, "dn": f"cn={nobody},{s.users_base}"}
            fragments = memberof_fragments([f"cn={nobody},{s.groups_base}"], s.distinguished_name)
            groups_filter = fill_filter(s.groups_filter, values, now, fragments)
            groups = self._connector.search(conn, s.groups_base, groups_filter, [], 1)
        return self._connector.read_rootdse(conn), users, groups


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: nothing in the directory can match them
        return False
    return True
