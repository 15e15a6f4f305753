"""A new password as the directory wants it, and the directory's answer as a sentence.

SASLprep (RFC 4013, as ldap3 applies it to bind passwords), Active Directory's unicodePwd
(MS-ADTS), the password-policy response control (draft-behera-ldap-password-policy) decoded,
and each refusal turned into a sentence a person understands. Pure: nothing here talks to a
server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# pyasn1 (ldap3's own dependency) ships no type information.
from pyasn1.codec.ber import decoder as ber_decoder  # type: ignore[import-untyped]
from pyasn1.error import PyAsn1Error  # type: ignore[import-untyped]
from pyasn1.type import namedtype, tag, univ  # type: ignore[import-untyped]

from portal.errors import PasswordRejectedError
from portal.users.ldap.ldap3_names import LDAPException, sasl_prep
from portal.users.passwords import password_candidates

PASSWORD_MODIFY_OID = "1.3.6.1.4.1.4203.1.11.1"  # noqa: S105 - RFC 3062, an OID
PPOLICY_OID = "1.3.6.1.4.1.42.2.27.8.5.1"  # draft-behera-ldap-password-policy
AD_POLICY_HINTS_OID = "1.2.840.113556.1.4.2239"  # AD: apply history/age rules to a reset too
AD_POLICY_HINTS_VALUE = bytes.fromhex("3003020101")  # SEQUENCE { INTEGER 1 }
SHA512_CRYPT_ROUNDS = 50000  # Authelia's sha2crypt default
CONSTRAINT_VIOLATION = 19  # the LDAP result code (RFC 4511 appendix A)

# ppolicy's PasswordPolicyResponseValue error codes, as sentences for the reset form.
PPOLICY_SENTENCES: Mapping[int, str] = MappingProxyType(
    {
        0: "The current password has expired; ask your administrator to reset it.",
        1: "This account is locked; ask your administrator to unlock it.",
        2: "The directory requires this password to be changed by signing in first.",
        3: "The directory does not allow this password to be changed here.",
        4: "The directory requires the current password to change it.",
        5: "The directory found this password too weak.",
        6: "The directory requires a longer password.",
        7: "The password was changed too recently; try again later.",
        8: "You used this password recently; choose another one.",
        9: "The directory requires a shorter password.",
    }
)
AD_RULES_SENTENCE = (
    "The password does not meet the directory's rules (length, complexity or history)."
)
GENERIC_REJECTION = "The directory did not accept this password; choose a different one."
UNSTORABLE_SENTENCE = "The password contains characters the directory cannot store."

# OpenLDAP's ppolicy texts for a constraintViolation sent without the response control.
_CONSTRAINT_TEXTS = (
    ("too short", PPOLICY_SENTENCES[6]),
    ("too long", PPOLICY_SENTENCES[9]),
    ("history", PPOLICY_SENTENCES[8]),
    ("quality", PPOLICY_SENTENCES[5]),
    ("too young", PPOLICY_SENTENCES[7]),
)


# --- encodings ---------------------------------------------------------------------------------


def unicode_pwd(password: str) -> bytes:
    """Encode a password as Active Directory's unicodePwd wants it: in quotes, UTF-16LE."""
    return f'"{password}"'.encode("utf-16-le")


def prepare_password(password: str) -> str:
    """Apply SASLprep as ldap3 does to bind passwords; raise PasswordRejectedError if it fails."""
    # Binds send sasl_prep(password): anything stored another way (our own hash, unicodePwd)
    # must be prepared the same way or the user could not sign in with what they typed. Callers
    # pass the normalized password (normalize_password); SASLprep's own NFKC uses Unicode 3.2.
    try:
        prepared = sasl_prep(password)
    except LDAPException:
        raise PasswordRejectedError([UNSTORABLE_SENTENCE]) from None
    return str(prepared)


def bind_passwords(password: str) -> tuple[str, ...]:
    """Return what binds send, in order: the normalized form, then as typed if that differs."""
    prepared: dict[str, None] = {}
    for candidate in password_candidates(password):
        with contextlib.suppress(PasswordRejectedError):  # a form SASLprep refuses cannot bind
            prepared[prepare_password(candidate)] = None
    # SECURITY: equal forms after SASLprep bind once: one failure per wrong password for lockout.
    return tuple(prepared)


# --- the password-policy control and its sentences ----------------------------------------------


def _ppolicy_response_spec() -> Any:
    """Build pyasn1's description of PasswordPolicyResponseValue."""
    context = tag.tagClassContext
    warning = univ.Choice(
        componentType=namedtype.NamedTypes(
            namedtype.NamedType(
                "timeBeforeExpiration",
                univ.Integer().subtype(implicitTag=tag.Tag(context, tag.tagFormatSimple, 0)),
            ),
            namedtype.NamedType(
                "graceAuthNsRemaining",
                univ.Integer().subtype(implicitTag=tag.Tag(context, tag.tagFormatSimple, 1)),
            ),
        )
    ).subtype(explicitTag=tag.Tag(context, tag.tagFormatConstructed, 0))
    error = univ.Enumerated().subtype(implicitTag=tag.Tag(context, tag.tagFormatSimple, 1))
    return univ.Sequence(
        componentType=namedtype.NamedTypes(
            namedtype.OptionalNamedType("warning", warning),
            namedtype.OptionalNamedType("error", error),
        )
    )


def decode_ppolicy_error(value: bytes) -> int | None:
    """Return the error code in a password-policy response control value, or None."""
    return decode_ppolicy(value)[0]


def decode_ppolicy(value: bytes) -> tuple[int | None, int | None]:
    """Return (error, graceAuthNsRemaining) from a password-policy response control value."""
    try:
        decoded, rest = ber_decoder.decode(value, asn1Spec=_ppolicy_response_spec())
    except PyAsn1Error:
        return None, None
    if rest:
        return None, None
    error, warning = decoded["error"], decoded["warning"]
    grace = None
    if warning.isValue and warning.getName() == "graceAuthNsRemaining":
        grace = int(warning.getComponent())
    return (int(error) if error.isValue else None), grace


def policy_sentence(code: int | None, message: str, result_code: int) -> str | None:
    """Turn the directory's answer to a password write into a sentence, or None if not policy."""
    if code is not None:
        return PPOLICY_SENTENCES.get(code, GENERIC_REJECTION)
    # Active Directory names its password rules failure in the diagnostic text.
    if "0000052d" in message.lower():
        return AD_RULES_SENTENCE
    if result_code == CONSTRAINT_VIOLATION:
        lowered = message.lower()
        for text, sentence in _CONSTRAINT_TEXTS:
            if text in lowered:
                return sentence
        return GENERIC_REJECTION
    return None
