"""FileUserBackend: the UserBackend over Authelia's users file, its lookups and its watching.

The loaded file is kept as one immutable Directory (document.py); lookups resolve usernames and
email addresses against it, a watcher reloads it when its stamp changes (keeping the last good
copy when the new one is broken), and password writes (writing.py) install the version written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Mapping

from portal.config import FileBackendConfig
from portal.errors import (
    PasswordWriteError,
    StartupCheckError,
    UnsupportedHashError,
    UserBackendError,
)
from portal.password_hashing import HashingQueue, shared_queue
from portal.users.base import User, fold
from portal.users.file.document import WHERE, Directory, LoadError, Stamp, read_directory, stamp_of
from portal.users.file.writing import write_password
from portal.users.hashing import hash_password, verify_password
from portal.users.passwords import normalize_password, password_candidates


class FileUserBackend:
    """Serve users from Authelia's YAML users file, optionally reloading it when it changes."""

    def __init__(
        self,
        config: FileBackendConfig,
        *,
        logger: logging.Logger | None = None,
        watch_interval: float = 1.0,
        verify: Callable[[str, str], bool] = verify_password,
        hashing: HashingQueue | None = None,
    ) -> None:
        """Remember the configuration; nothing is read until startup_check or the first lookup.

        Every hash and verification waits its turn in `hashing` (default: the process's shared
        queue, portal/password_hashing.py), never in the default thread pool.
        """
        self._config = config
        self._verify = verify  # one password against one hash (tests count the calls)
        self._hashing = hashing or shared_queue()
        self._path = str(config.path)
        self._logger = logger or logging.getLogger("portal.users.file")
        self._watch_interval = watch_interval
        self._directory: Directory | None = None
        self._reported: Mapping[str, str] = {}
        self._bad_stamp: Stamp | None = None
        self._missing_reported = False
        self._dummy: str | None = None
        self._decoys: tuple[Directory | None, tuple[str, ...]] = (None, ())  # see _decoy_digest
        self._dummy_lock = asyncio.Lock()
        self._lock = asyncio.Lock()  # serializes writes and reloads in this process
        self._watcher: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Future[None]] = set()

    # --- the UserBackend protocol -------------------------------------------------------------

    async def startup_check(self) -> None:
        """Load the file and check the hashing settings; start watching if configured."""
        async with self._lock:
            try:
                self._install(await asyncio.to_thread(self._load))
            except LoadError as exc:
                raise StartupCheckError(str(exc)) from None
        try:
            await self._dummy_digest()
        except ValueError as exc:
            raise StartupCheckError(f"{WHERE}.password: {exc}") from None
        if self._config.watch and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name=f"watch {self._path}")

    async def close(self) -> None:
        """Stop watching the file and let password writes under way finish."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def get_user(self, identifier: str) -> User | None:
        """Find a user by username, or by email address when search.email is on."""
        return self._user_in(await self._current(), identifier)

    def loaded_user(self, identifier: str) -> User | None:
        """Answer get_user from the file already loaded, without waiting (the sessions' fast
        path for nginx's auth_request: portal.sessions.LoadedUserLookup); raise LookupError
        when the file is not loaded yet."""
        directory = self._directory
        if directory is None:
            raise LookupError(f"users file {self._path} is not loaded yet")
        return self._user_in(directory, identifier)

    def _user_in(self, directory: Directory, identifier: str) -> User | None:
        username = self._resolve(directory, identifier)
        if username is None and self._config.search.email:
            username = self._resolve_email(directory, identifier)
        return directory.accounts[username].user if username is not None else None

    async def list_users(self) -> list[User]:
        """Return every user of the file, disabled ones included, sorted by username (the
        UserLister role; entries the file's checks ignore are left out, as lookups do)."""
        directory = await self._current()
        return [directory.accounts[name].user for name in sorted(directory.accounts)]

    async def check_password(self, username: str, password: str) -> bool:
        """Return whether the password is the user's; False if unknown, disabled or locked."""
        directory = await self._current()
        name = self._resolve(directory, username)
        account = directory.accounts.get(name) if name is not None else None
        if account is None or account.user.disabled or not account.usable or not account.digest:
            # SECURITY: do the same work as for a real user, in the same queue, so timing does
            # not tell who exists.
            await self._hashing.run(self._matches, password, await self._decoy_digest(directory))
            return False
        return await self._hashing.run(self._matches, password, account.digest)

    async def set_password(self, username: str, password: str) -> None:
        """Hash the password and write it into the file; raise PasswordWriteError on failure."""
        name = self._resolve(await self._current(), username)
        if name is None:
            raise PasswordWriteError(f"users file {self._path}: no user {username!r}")
        try:
            digest = await self._hashing.run(
                lambda: hash_password(normalize_password(password), self._config.password)
            )
        except UnicodeError:
            # SECURITY: the codec's message would quote part of the password.
            raise PasswordWriteError(
                "the password contains characters that cannot be stored"
            ) from None
        except ValueError as exc:
            raise PasswordWriteError(str(exc)) from exc
        # Once the file is being written, a cancelled caller must not release the lock (or skip
        # updating the state) while the worker thread is still replacing the file.
        write = asyncio.ensure_future(self._locked_write(name, digest))
        self._writes.add(write)
        write.add_done_callback(self._forget_write)
        await asyncio.shield(write)

    def _matches(self, password: str, digest: str) -> bool:
        """Verify the normalized password, then (a hash from before) the typed one if it differs."""
        for candidate in password_candidates(password):
            try:
                if self._verify(candidate, digest):
                    return True
            except UnsupportedHashError:
                # SECURITY: a mismatch like any other, for the dummy hash too: known and unknown
                # users cost the same number of verifications.
                continue
        return False

    async def _locked_write(self, username: str, digest: str) -> None:
        async with self._lock:
            self._install(await asyncio.to_thread(self._write_password, username, digest))

    def _forget_write(self, write: asyncio.Future[None]) -> None:
        self._writes.discard(write)
        if not write.cancelled():
            write.exception()  # the caller, if still waiting, has it; nobody else needs it

    async def healthy(self) -> bool:
        """Tell whether a good copy of the users file is loaded."""
        return self._directory is not None

    async def password_state(self, username: str) -> str | None:
        """Return the user's stored hash ('' when none is set), or None for an unknown user."""
        directory = await self._current()
        name = self._resolve(directory, username)
        if name is None:
            return None
        return directory.accounts[name].digest or ""

    async def clear_lockout(self, username: str) -> bool:
        """Return False: the users file has no lockout (only `disabled`, an administrator's)."""
        return False

    # --- lookups -------------------------------------------------------------------------------

    def _unique(self, matches: tuple[str, ...], what: str) -> str | None:
        if len(matches) > 1:
            self._logger.warning(
                "users file %s: %s matches several users (%s); refusing to pick one",
                self._path,
                what,
                ", ".join(sorted(matches)),
            )
            return None
        return matches[0] if matches else None

    # SECURITY: with case_insensitive, names that fold alike are the same name: if two users
    # share one, the identifier names nobody (a reset mail must never reach the wrong user).

    def _resolve(self, directory: Directory, identifier: str) -> str | None:
        """Return the canonical username the identifier names as a username, if any."""
        if not self._config.search.case_insensitive:
            return identifier if identifier in directory.accounts else None
        return self._unique(directory.by_folded_name.get(fold(identifier), ()), "a username")

    def _resolve_email(self, directory: Directory, identifier: str) -> str | None:
        if self._config.search.case_insensitive:
            matches = directory.by_folded_email.get(fold(identifier), ())
        else:
            matches = directory.by_email.get(identifier, ())
        return self._unique(matches, "an email address")

    # --- loading and watching ------------------------------------------------------------------

    def _load(self) -> Directory:
        """Read and index the file (in a worker thread); raise LoadError naming the file."""
        return read_directory(self._path)

    def _install(self, directory: Directory) -> Directory:
        """Make a freshly loaded version current and log each new per-user problem once."""
        for username, problem in directory.problems.items():
            if self._reported.get(username) != problem:
                self._logger.warning("users file %s: user %r: %s", self._path, username, problem)
        self._reported = directory.problems
        self._directory = directory
        self._bad_stamp = None
        self._missing_reported = False
        return directory

    async def _current(self) -> Directory:
        """Return the loaded file, loading it first if startup_check has not run."""
        if self._directory is not None:
            return self._directory
        async with self._lock:
            if self._directory is not None:
                return self._directory
            try:
                return self._install(await asyncio.to_thread(self._load))
            except LoadError as exc:
                raise UserBackendError(str(exc)) from None

    async def _decoy_digest(self, directory: Directory) -> str:
        """Return a hash to verify for a user who cannot sign in: one of the stored ones.

        SECURITY: a stored hash costs what checking a real user costs, whatever algorithm and
        parameters the file's hashes have (they may predate the configured `password` settings);
        picked at random, an unknown name costs what a random known one does. The answer is
        thrown away. A file without a usable hash falls back to one made with the configuration.
        The list is gathered once per loaded version of the file, not per sign-in: an unknown
        name costs the event loop what a known one does, however many users the file has.
        """
        if self._decoys[0] is not directory:
            usable = (a.digest for a in directory.accounts.values() if a.usable and a.digest)
            self._decoys = (directory, tuple(usable))
        digests = self._decoys[1]
        return secrets.choice(digests) if digests else await self._dummy_digest()

    async def _dummy_digest(self) -> str:
        if self._dummy is None:
            async with self._dummy_lock:
                if self._dummy is None:
                    password = secrets.token_urlsafe(16)
                    config = self._config.password
                    self._dummy = await self._hashing.run(hash_password, password, config)
        return self._dummy

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._watch_interval)
            try:
                await self._reload_if_changed()
            except Exception:  # keep watching whatever went wrong this time
                self._logger.exception("users file %s: checking for changes failed", self._path)

    async def _reload_if_changed(self) -> None:
        async with self._lock:
            try:
                stamp = stamp_of(await asyncio.to_thread(os.stat, self._path))
            except OSError as exc:
                if not self._missing_reported:
                    self._logger.warning(
                        "users file %s: cannot be read (%s); keeping the last good copy",
                        self._path,
                        exc.strerror,
                    )
                    self._missing_reported = True
                return
            self._missing_reported = False
            current = self._directory
            if (current is not None and stamp == current.stamp) or stamp == self._bad_stamp:
                return
            try:
                directory = await asyncio.to_thread(self._load)
            except LoadError as exc:
                self._bad_stamp = exc.stamp or stamp
                self._logger.warning("%s; keeping the last good copy", exc)
                return
            self._install(directory)
            self._logger.info("users file %s: reloaded", self._path)

    # --- writing -------------------------------------------------------------------------------

    def _write_password(self, username: str, digest: str) -> Directory:
        """Put the digest into the current file (in a worker thread); return the new version."""
        return write_password(self._path, username, digest, self._logger)
