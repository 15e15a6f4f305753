"""What a directory says about an account: kept out by an administrator, locked out by failed
sign-ins, or let in only to change its password.

Read from operational attributes in the same search that finds the user (no extra round trip),
and from the answer to the user's own bind, which is the directory judging its own policy.

- OpenLDAP's ppolicy overlay (draft-behera-ldap-password-policy-10 section 5.3; slapo-ppolicy(5);
  servers/slapd/overlays/ppolicy.c, account_locked() and ppolicy_bind_response()):
  `pwdAccountLockedTime: 000001010000Z` is an administrator's lock for good; any other time is a
  lockout from failed binds (slapd ends it after pwdLockoutDuration, or never if that is 0);
  `pwdStartTime` / `pwdEndTime` bound when the password works at all; `pwdReset: TRUE` asks for a
  new password. Expiry (pwdChangedTime + the policy's pwdMaxAge) needs the policy entry, which
  the service account cannot find for the default policy (olcPPolicyDefault lives in cn=config),
  so expiry is known from the bind: passwordExpired, or a grace login's graceAuthNsRemaining.
- Active Directory (MS-ADTS 2.2.16 userAccountControl flags; MS-ADA3 accountExpires,
  lockoutTime, pwdLastSet, msDS-User-Account-Control-Computed): ACCOUNTDISABLE, an accountExpires
  in the past, UF_LOCKOUT and UF_PASSWORD_EXPIRED as the domain controller computes them with
  its own lockout duration and maximum password age, pwdLastSet=0 for "must change at next
  logon". A refused bind names the reason in its diagnostic text ("AcceptSecurityContext error,
  data 773"): the Win32 codes of MS-ERREF 2.2, in hex.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from portal.errors import ChangeReason
from portal.users.base import AccountState

PPOLICY_ATTRIBUTES = ("pwdAccountLockedTime", "pwdReset", "pwdStartTime", "pwdEndTime")
AD_ATTRIBUTES = (
    "userAccountControl",
    "accountExpires",
    "lockoutTime",
    "pwdLastSet",
    "msDS-User-Account-Control-Computed",
)

ACCOUNTDISABLE = 0x2  # userAccountControl
UF_LOCKOUT = 0x10  # msDS-User-Account-Control-Computed
UF_PASSWORD_EXPIRED = 0x800000  # msDS-User-Account-Control-Computed
AD_NEVER = 0x7FFFFFFFFFFFFFFF  # accountExpires: never
NT_EPOCH_OFFSET = 11644473600  # seconds from 1601-01-01 (NT epoch) to 1970-01-01

# ppolicy's PasswordPolicyResponseValue error codes that follow a right password.
PP_PASSWORD_EXPIRED, PP_CHANGE_AFTER_RESET = 0, 2
# MS-ERREF Win32 codes in AD's bind diagnostics; sent only once the password was found right.
AD_PASSWORD_EXPIRED, AD_PASSWORD_MUST_CHANGE = 0x532, 0x773

_GENERALIZED = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?:[.,]\d+)?Z")
_AD_DATA = re.compile(r"\bdata ([0-9a-f]+)\b")


def state_attributes(active_directory: bool) -> tuple[str, ...]:
    """Return the attributes a lookup asks for (operational ones come only when named)."""
    return AD_ATTRIBUTES if active_directory else PPOLICY_ATTRIBUTES


def read_state(
    values: Callable[[str], list[str]], *, active_directory: bool, now: datetime
) -> tuple[bool, AccountState]:
    """Return (disabled, state) from an entry's values of `state_attributes(...)`."""
    if active_directory:
        return _active_directory(values, now)
    return _ppolicy(values, now)


def _ppolicy(values: Callable[[str], list[str]], now: datetime) -> tuple[bool, AccountState]:
    state = AccountState(0)
    disabled = False
    for locked in values("pwdAccountLockedTime")[:1]:
        if is_permanent_lock(locked):
            disabled = True  # an administrator's lock: only an administrator lifts it
        else:
            state |= AccountState.LOCKED_OUT
    # SECURITY: a time slapd could not read locks the account there too (account_locked()).
    for start in values("pwdStartTime")[:1]:
        begins = generalized_time(start)
        disabled = disabled or begins is None or now < begins
    for end in values("pwdEndTime")[:1]:
        ends = generalized_time(end)
        disabled = disabled or ends is None or ends <= now
    if [v.upper() for v in values("pwdReset")[:1]] == ["TRUE"]:
        state |= AccountState.MUST_CHANGE
    return disabled, state


def _active_directory(
    values: Callable[[str], list[str]], now: datetime
) -> tuple[bool, AccountState]:
    control = _integer(values("userAccountControl"))
    expires = _integer(values("accountExpires"))
    computed = _integer(values("msDS-User-Account-Control-Computed"))
    lockout = _integer(values("lockoutTime"))
    state = AccountState(0)
    nt_now = (int(now.timestamp()) + NT_EPOCH_OFFSET) * 10_000_000
    disabled = bool(control is not None and control & ACCOUNTDISABLE) or (
        expires is not None and 0 < expires < AD_NEVER and expires <= nt_now
    )
    # The computed flags know the domain's lockout duration; lockoutTime alone may be stale.
    if (computed & UF_LOCKOUT) if computed is not None else (lockout or 0) > 0:
        state |= AccountState.LOCKED_OUT
    if values("pwdLastSet")[:1] == ["0"]:
        state |= AccountState.MUST_CHANGE
    elif computed is not None and computed & UF_PASSWORD_EXPIRED:
        state |= AccountState.PASSWORD_EXPIRED
    return disabled, state


def _integer(values: list[str]) -> int | None:
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


def is_permanent_lock(value: str) -> bool:
    """Tell whether a pwdAccountLockedTime is 000001010000Z, ppolicy's lock until unlocked."""
    match = _GENERALIZED.fullmatch(value.strip())
    if match is None:
        return False
    return match.group(1, 2, 3, 4, 5) == ("0000", "01", "01", "00", "00") and match.group(6) in (
        None,
        "00",
    )


def generalized_time(value: str) -> datetime | None:
    """Read a GeneralizedTime in UTC (YYYYmmddHHMM[SS][.f]Z, as slapd stores it), or None."""
    match = _GENERALIZED.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute = (int(part) for part in match.group(1, 2, 3, 4, 5))
    try:
        return datetime(year, month, day, hour, minute, int(match.group(6) or 0), tzinfo=UTC)
    except ValueError:
        return None


def change_required(
    *, code: int, message: str, ppolicy_error: int | None, ppolicy_grace: int | None
) -> ChangeReason | None:
    """Tell whether a bind answer proves the password right but demands a new one first."""
    if ppolicy_error == PP_CHANGE_AFTER_RESET:  # the bind succeeded, restricted to a change
        return "must_change"
    if ppolicy_error == PP_PASSWORD_EXPIRED or ppolicy_grace is not None:
        return "expired"  # refused for age, or let in on one of the grace logins
    found = _AD_DATA.search(message.lower()) if code == 49 else None
    if found is not None:
        data = int(found.group(1), 16)
        if data == AD_PASSWORD_MUST_CHANGE:
            return "must_change"
        if data == AD_PASSWORD_EXPIRED:
            return "expired"
    return None
