"""Encryption at rest with storage.encryption_key: AES-256-GCM from `cryptography`.

The 256-bit AES key is derived from the configured key with HKDF-SHA256 (RFC 5869; no salt, the
fixed info label below), so one configured key could later yield other, independent keys under
other labels. Authelia instead uses SHA-256 of the configured key as its AES key: the same key
text gives a different AES key here, so a database encrypted by Authelia is not readable by the
portal and the other way round (the tables differ anyway).

Each value gets a fresh random 96-bit nonce (NIST SP 800-38D section 8.2.2) and is bound by
GCM's associated data (AAD) to where it lives, e.g. "totp_configurations:john": a row copied
into another user's row, or a sealed value moved to another purpose, does not open. The stored
form is nonce || ciphertext || tag (bytes, `encrypt`), or that in unpadded base64url (str,
`seal`) for text fields such as a session record. A value that does not open raises
DecryptionError; the error never says why and never carries the value.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portal.errors import DecryptionError

HKDF_INFO = b"portal storage encryption v1: AES-256-GCM"
NONCE_SIZE = 12

# Where the start-up check's value lives: table `encryption`, row `check`.
CHECK_NAME = "check"
CHECK_AAD = b"encryption:check"


def totp_aad(username: str) -> bytes:
    """Return the associated data binding a TOTP secret to its row (table and username)."""
    return b"totp_configurations:" + username.encode("utf-8")


def identity_token_key_aad(key_id: str) -> bytes:
    """Return the associated data binding a generated signing key to its row (table, key id)."""
    return b"identity_token_keys:" + key_id.encode("utf-8")


class SecretBox:
    """Encrypt and decrypt values with a key derived from storage.encryption_key.

    SecretBox(key): `key` is the configured text (at least 20 characters, checked by the
    configuration); it is not kept, only the derived AES key.
    """

    def __init__(self, key: str) -> None:
        """Derive the AES-256 key (HKDF-SHA256, info HKDF_INFO)."""
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
            key.encode("utf-8")
        )
        self._aead = AESGCM(derived)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Return nonce || ciphertext || tag for `plaintext`, bound to `aad`."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        """Return the plaintext of `encrypt`'s output; DecryptionError if it does not open."""
        if len(blob) < NONCE_SIZE + 16:
            raise DecryptionError("encrypted value is too short")
        try:
            return self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag:
            raise DecryptionError(
                "encrypted value did not open (another storage.encryption_key, or altered data)"
            ) from None

    def seal(self, plaintext: bytes, aad: str) -> str:
        """Return `encrypt`'s output as unpadded base64url text, bound to the text `aad`."""
        blob = self.encrypt(plaintext, aad.encode("utf-8"))
        return base64.urlsafe_b64encode(blob).decode("ascii").rstrip("=")

    def open(self, token: str, aad: str) -> bytes:
        """Return the plaintext of a `seal`ed token; DecryptionError if it does not open."""
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise DecryptionError("sealed value is not base64url") from None
        return self.decrypt(blob, aad.encode("utf-8"))

    def new_check_value(self) -> bytes:
        """Return a fresh encrypted check value for the `encryption` table (random plaintext)."""
        return self.encrypt(os.urandom(32), CHECK_AAD)

    def opens_check_value(self, blob: bytes) -> bool:
        """Tell whether the stored check value opens with this key."""
        try:
            self.decrypt(blob, CHECK_AAD)
        except DecryptionError:
            return False
        return True


WRONG_KEY = (
    "storage: storage.encryption_key does not match the key this database was encrypted with "
    "(use the key it was created with, or change it with "
    "'portal storage encryption change-key')"
)
