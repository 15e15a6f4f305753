"""Sealing session records for Redis with session.secret (Authelia: "the secret key used to
encrypt session data in Redis"; its internal/session/encrypting_serializer.go uses AES-GCM too).

Two keys are derived from the secret with HKDF-SHA256 (RFC 5869), each under its own fixed info
string: an AES-256-GCM key (NIST SP 800-38D) for the sealed fields, and an HMAC-SHA256 key
(RFC 2104) for the keyed hash of the username that the Lua scripts compare and the per-user
index is named by. A sealed value is base64(nonce || ciphertext || tag) with a random 96-bit
nonce; its associated data is the record's Redis key and the field's name, so a value moved to
another record or field does not open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_AEAD_INFO = b"portal session.redis record encryption v1"
_USER_INFO = b"portal session.redis username index v1"
_NONCE_BYTES = 12


class UnsealError(Exception):
    """A sealed value did not open: altered, moved, or sealed under another session.secret."""


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


class Sealer:
    """Seal and open session record fields with keys derived from session.secret.

    `secret` is session.secret's value (any length; HKDF stretches or compresses it).
    """

    def __init__(self, secret: str) -> None:
        raw = secret.encode()
        self._aead = AESGCM(_derive(raw, _AEAD_INFO))
        self._user_key = _derive(raw, _USER_INFO)

    def user_tag(self, username: str) -> str:
        """Return the keyed hash (HMAC-SHA256, hex, 64 characters) standing for a username."""
        return hmac.new(self._user_key, username.encode(), hashlib.sha256).hexdigest()

    def seal(self, plaintext: str, *, key: str, field: str) -> str:
        """Encrypt plaintext for the Redis hash `key`'s `field`; return base64 text."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), _associated(key, field))
        return base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, *, key: str, field: str) -> str:
        """Decrypt what seal() returned for the same key and field; raise UnsealError otherwise."""
        try:
            raw = base64.b64decode(sealed, validate=True)
            nonce, body = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
            if len(nonce) != _NONCE_BYTES:
                raise UnsealError("too short")
            return self._aead.decrypt(nonce, body, _associated(key, field)).decode()
        except (InvalidTag, ValueError) as exc:  # binascii.Error, UnicodeDecodeError: ValueError
            raise UnsealError(type(exc).__name__) from None


def _associated(key: str, field: str) -> bytes:
    return key.encode() + b"\x00" + field.encode()
