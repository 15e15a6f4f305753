"""Password hashes in the formats Authelia reads and writes: verifying, recognising, creating.

Formats (an optional `{CRYPT}` prefix, any case, is ignored):

    $argon2id$ / $argon2i$ / $argon2d$          PHC string (argon2-cffi's core, one thread)
    $6$ / $5$  [rounds=N$]                      SHA-crypt (libpass)
    $2b$ / $2a$ / $2y$                          bcrypt (the bcrypt package)
    $bcrypt-sha256$v=2,t=2b,r=N$salt$hash       Authelia's and passlib's bcrypt over HMAC-SHA256
    $pbkdf2$ / $pbkdf2-sha{224,256,384,512}$    passlib's format, adapted base64 (hashlib)
    $scrypt$ln=N,r=N,p=N$salt$key               passlib's and go-crypt's format (hashlib)

Everything here is synchronous CPU work: callers run it in a worker thread. Nothing here ever puts
a hash or a password into an exception message. Nothing here normalizes either: a password is
hashed and verified exactly as given, and callers choose the forms (portal.users.passwords), so
security answers (normalized their own way) and hashes from before normalization both still work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from typing import Any

import bcrypt
from argon2 import low_level
from argon2.low_level import ARGON2_VERSION, Type, core, error_to_str, ffi
from passlib.hash import sha256_crypt, sha512_crypt

from portal.config import PasswordConfig
from portal.errors import UnsupportedHashError

# argon2-cffi's API documentation names low_level.lib (its constants) for use with core(); it
# is not in low_level.__all__, hence the ignore.
_LIB: Any = low_level.lib  # type: ignore[attr-defined]

BCRYPT_MAX_PASSWORD_BYTES = 72
_INT_MAX = 2**31 - 1  # hashlib.scrypt's ceiling for maxmem

_Verifier = Callable[[bytes], bool]

_ARGON2 = re.compile(
    r"\$(argon2id|argon2i|argon2d)\$(?:v=([0-9]+)\$)?m=([0-9]+),t=([0-9]+),p=([0-9]+)"
    r"\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})"
)
_ARGON2_TYPES = {"argon2id": Type.ID, "argon2i": Type.I, "argon2d": Type.D}
# A PHC string without v= is version 1.0 (0x10), as the reference decoder reads it.
_ARGON2_VERSIONS = {None: 0x10, "16": 0x10, "19": 0x13}
_UINT32_MAX = 2**32 - 1
_SHA_CRYPT = re.compile(r"\$([56])\$(?:rounds=(\d+)\$)?([./0-9A-Za-z]{0,16})\$([./0-9A-Za-z]+)")
_SHA_CRYPT_CHECKSUM = {"5": 43, "6": 86}
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_BCRYPT_SHA256 = re.compile(r"\$bcrypt-sha256\$([^$]+)\$([./A-Za-z0-9]{22})\$([./A-Za-z0-9]{31})")
_BCRYPT_SHA256_V1 = re.compile(r"(2[ab]),(\d{1,2})")
_PBKDF2 = re.compile(
    r"\$pbkdf2(|-sha1|-sha224|-sha256|-sha384|-sha512)\$(\d+)\$([./A-Za-z0-9]+)\$([./A-Za-z0-9]+)"
)
_SCRYPT = re.compile(r"\$scrypt\$([^$]*)\$([./+A-Za-z0-9]+={0,2})\$([./+A-Za-z0-9]+={0,2})")
_SCRYPT_DEFAULTS = {"ln": 16, "r": 8, "p": 1}  # go-crypt fills in missing parameters so


def _unsupported(what: str) -> UnsupportedHashError:
    # SECURITY: the message names the problem, never the hash itself.
    return UnsupportedHashError(f"unsupported password hash format ({what})")


def _b64decode(text: str) -> bytes:
    """Decode standard or adapted ('.' for '+') base64, padded or not."""
    text = text.rstrip("=").replace(".", "+")
    if len(text) % 4 == 1:
        raise ValueError("truncated base64")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _b64encode(data: bytes) -> str:
    """Encode standard base64 without padding (PHC, passlib's and go-crypt's scrypt)."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _ab64encode(data: bytes) -> str:
    """Encode passlib's adapted base64: '.' instead of '+', no padding (PBKDF2)."""
    return _b64encode(data).replace("+", ".")


def _parameters(text: str) -> dict[str, str]:
    """Split 'a=1,b=2' into a mapping; raise ValueError on anything else."""
    pairs = [part.split("=", 1) for part in text.split(",")] if text else []
    if any(len(pair) != 2 or not pair[0] for pair in pairs):
        raise ValueError("malformed parameters")
    result = dict((key, value) for key, value in pairs)
    if len(result) != len(pairs):
        raise ValueError("repeated parameter")
    return result


def _argon2_tag(
    secret: bytes,
    salt: bytes,
    kind: Type,
    version: int,
    costs: tuple[int, int, int],
    length: int,
) -> bytes:
    """Return argon2's tag of `length` bytes, all its lanes computed in the calling thread.

    costs = (memory in KiB, iterations, lanes): the hash's m, t and p. argon2-cffi's own
    functions run one thread per lane; the tag depends on the lanes, not on the threads that
    compute them (RFC 9106 section 3.1), so one thread gives the same bytes and leaves the other
    cores to the event loop. Raises ValueError with argon2's own message when it refuses the
    parameters or cannot allocate the memory. Through argon2-cffi's documented low-level
    binding `argon2.low_level.core`, whose context struct may change between releases of
    argon2-cffi-bindings: the known-answer tests in tests/unit/test_argon2.py catch that.
    """
    memory, iterations, lanes = costs
    # cffi buffers: the context holds only their addresses, so they stay referenced until
    # after the call. secret/ad NULL and no memory callbacks, as argon2_hash() sets them.
    out = ffi.new("uint8_t[]", length)
    pwd = ffi.new("uint8_t[]", secret)
    salt_buffer = ffi.new("uint8_t[]", salt)
    context = ffi.new(
        "argon2_context *",
        {
            "out": out,
            "outlen": length,
            "pwd": pwd,
            "pwdlen": len(secret),
            "salt": salt_buffer,
            "saltlen": len(salt),
            "secret": ffi.NULL,
            "secretlen": 0,
            "ad": ffi.NULL,
            "adlen": 0,
            "t_cost": iterations,
            "m_cost": memory,
            "lanes": lanes,
            "threads": 1,
            "version": version,
            "allocate_cbk": ffi.NULL,
            "free_cbk": ffi.NULL,
            "flags": _LIB.ARGON2_DEFAULT_FLAGS,
        },
    )
    code = core(context, kind.value)
    if code != _LIB.ARGON2_OK:
        raise ValueError(error_to_str(code))
    return bytes(ffi.buffer(out, length))


def _phc_b64decode(text: str) -> bytes:
    """Decode PHC base64 as argon2's reference decoder does: standard alphabet, no padding,
    unused bits zero (so one string per value); raise ValueError otherwise."""
    if "=" in text or len(text) % 4 == 1:
        raise ValueError("not PHC base64")
    data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    if _b64encode(data) != text:
        raise ValueError("not canonical base64")
    return data


def _argon2_number(text: str) -> int:
    """Read a PHC decimal as argon2's decoder does: no leading zero, at most 2**32 - 1."""
    if len(text) > 10 or (len(text) > 1 and text[0] == "0") or int(text) > _UINT32_MAX:
        raise ValueError("not an argon2 number")
    return int(text)


def _argon2(match: re.Match[str], _digest: str) -> _Verifier:
    version_text, memory_text, time_text, lanes_text = match.group(2, 3, 4, 5)
    # The checks argon2's reference decoder makes before computing anything (decode_string
    # and validate_inputs): what argon2-cffi's verify refused, this refuses too.
    try:
        memory, time_cost, lanes = (_argon2_number(t) for t in (memory_text, time_text, lanes_text))
    except ValueError:
        raise _unsupported("argon2 parameters") from None
    if (
        version_text not in _ARGON2_VERSIONS
        or min(memory, time_cost, lanes) < 1
        or lanes > _LIB.ARGON2_MAX_LANES
        or not 8 * lanes <= memory <= _LIB.ARGON2_MAX_MEMORY
    ):
        raise _unsupported("argon2 parameters")
    try:
        salt, stored = _phc_b64decode(match.group(6)), _phc_b64decode(match.group(7))
    except (ValueError, binascii.Error):
        raise _unsupported("argon2 encoding") from None
    if len(salt) < _LIB.ARGON2_MIN_SALT_LENGTH or len(stored) < _LIB.ARGON2_MIN_OUTLEN:
        raise _unsupported("argon2 salt or hash length")
    kind, version = _ARGON2_TYPES[match.group(1)], _ARGON2_VERSIONS[version_text]

    def verify(secret: bytes) -> bool:
        try:
            tag = _argon2_tag(secret, salt, kind, version, (memory, time_cost, lanes), len(stored))
        except ValueError:
            raise _unsupported("argon2 hash could not be computed") from None
        return hmac.compare_digest(tag, stored)

    return verify


def _sha_crypt(match: re.Match[str], digest: str) -> _Verifier:
    kind, rounds, _, checksum = match.groups()
    if len(checksum) != _SHA_CRYPT_CHECKSUM[kind]:
        raise _unsupported("SHA-crypt checksum length")
    if rounds is not None and not 1000 <= int(rounds) <= 999_999_999:
        raise _unsupported("SHA-crypt rounds")
    handler = sha512_crypt if kind == "6" else sha256_crypt

    def verify(secret: bytes) -> bool:
        try:
            return bool(handler.verify(secret, digest))
        except ValueError:
            raise _unsupported("SHA-crypt") from None

    return verify


def _bcrypt(match: re.Match[str], digest: str) -> _Verifier:
    if not 4 <= int(match.group(1)) <= 31:
        raise _unsupported("bcrypt cost")
    encoded = digest.encode("ascii")

    def verify(secret: bytes) -> bool:
        # SECURITY: bcrypt reads only 72 bytes; a longer password must never match a hash of
        # its prefix, so refuse instead of truncating (bcrypt 5 raises here anyway).
        if len(secret) > BCRYPT_MAX_PASSWORD_BYTES:
            return False
        try:
            return bcrypt.checkpw(secret, encoded)
        except ValueError:
            raise _unsupported("bcrypt") from None

    return verify


def _bcrypt_sha256(match: re.Match[str], _digest: str) -> _Verifier:
    settings, salt, checksum = match.groups()
    v1 = _BCRYPT_SHA256_V1.fullmatch(settings)
    if v1:
        version, ident, cost_text = 1, v1.group(1), v1.group(2)
    else:
        try:
            params = _parameters(settings)
        except ValueError:
            raise _unsupported("bcrypt-sha256 parameters") from None
        if set(params) != {"v", "t", "r"} or params["v"] != "2" or params["t"] not in ("2a", "2b"):
            raise _unsupported("bcrypt-sha256 parameters")
        if not re.fullmatch(r"[0-9]{1,2}", params["r"]):  # ASCII: isdigit() takes "²"
            raise _unsupported("bcrypt-sha256 cost")
        version, ident, cost_text = 2, params["t"], params["r"]
    cost = int(cost_text)
    if not 4 <= cost <= 31:
        raise _unsupported("bcrypt-sha256 cost")
    inner = f"${ident}${cost:02d}${salt}{checksum}".encode("ascii")

    def verify(secret: bytes) -> bool:
        return bcrypt.checkpw(_bcrypt_sha256_input(secret, salt, version), inner)

    return verify


def _bcrypt_sha256_input(secret: bytes, salt: str, version: int) -> bytes:
    """Pre-hash the password as passlib and go-crypt do: base64 of HMAC-SHA256 keyed by the salt."""
    if version == 1:
        return base64.b64encode(hashlib.sha256(secret).digest())
    return base64.b64encode(hmac.new(salt.encode("ascii"), secret, hashlib.sha256).digest())


def _pbkdf2(match: re.Match[str], _digest: str) -> _Verifier:
    variant, iterations_text, salt_text, key_text = match.groups()
    name = variant.removeprefix("-") or "sha1"
    iterations = int(iterations_text)
    try:
        salt, key = _b64decode(salt_text), _b64decode(key_text)
    except (ValueError, binascii.Error):
        raise _unsupported("PBKDF2 encoding") from None
    if iterations < 1 or not key:
        raise _unsupported("PBKDF2 parameters")

    def verify(secret: bytes) -> bool:
        derived = hashlib.pbkdf2_hmac(name, secret, salt, iterations, dklen=len(key))
        return hmac.compare_digest(derived, key)

    return verify


def _scrypt_maxmem(n: int, r: int, p: int) -> int:
    """Return the memory bound OpenSSL needs for these parameters, with some slack."""
    return 128 * r * (n + p + 2) + 1024 * 1024


def _scrypt(match: re.Match[str], _digest: str) -> _Verifier:
    settings, salt_text, key_text = match.groups()
    try:
        given = _parameters(settings)
        if not set(given) <= set(_SCRYPT_DEFAULTS):
            raise ValueError("unknown parameter")
        params = {k: int(given.get(k, v)) for k, v in _SCRYPT_DEFAULTS.items()}
        salt, key = _b64decode(salt_text), _b64decode(key_text)
    except (ValueError, binascii.Error):
        raise _unsupported("scrypt parameters or encoding") from None
    ln, r, p = params["ln"], params["r"], params["p"]
    if not 1 <= ln <= 58 or r < 1 or p < 1 or r * p >= 2**30 or not key:
        raise _unsupported("scrypt parameters")
    n = 1 << ln
    maxmem = _scrypt_maxmem(n, r, p)
    if maxmem > _INT_MAX:
        raise _unsupported("scrypt parameters need too much memory")

    def verify(secret: bytes) -> bool:
        derived = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=len(key))
        return hmac.compare_digest(derived, key)

    return verify


_FORMATS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], str], _Verifier]], ...] = (
    (_ARGON2, _argon2),
    (_SHA_CRYPT, _sha_crypt),
    (_BCRYPT, _bcrypt),
    (_BCRYPT_SHA256, _bcrypt_sha256),
    (_PBKDF2, _pbkdf2),
    (_SCRYPT, _scrypt),
)


def _parse(digest: str) -> _Verifier:
    """Recognise a stored hash and return a function checking a password against it."""
    if digest[:7].upper() == "{CRYPT}":
        digest = digest[7:]
    for pattern, build in _FORMATS:
        match = pattern.fullmatch(digest)
        if match:
            return build(match, digest)
    raise _unsupported("unknown or malformed")


def is_supported(digest: str) -> bool:
    """Return whether the hash is in a format verify_password can check."""
    try:
        _parse(digest)
    except UnsupportedHashError:
        return False
    return True


def verify_password(password: str, digest: str) -> bool:
    """Return whether the password matches the hash; raise UnsupportedHashError if unreadable."""
    verify = _parse(digest)
    # surrogatepass: a password no hash can match still costs the full verification.
    return verify(password.encode("utf-8", "surrogatepass"))


def hash_password(password: str, config: PasswordConfig) -> str:
    """Hash a new password with the configured algorithm; raise ValueError if it cannot be."""
    secret = password.encode("utf-8")
    if config.algorithm == "argon2":
        return _hash_argon2(secret, config)
    if config.algorithm == "sha2crypt":
        sha2 = config.sha2crypt
        handler = sha512_crypt if sha2.variant == "sha512" else sha256_crypt
        return str(handler.using(rounds=sha2.iterations, salt_size=sha2.salt_length).hash(secret))
    if config.algorithm == "pbkdf2":
        return _hash_pbkdf2(secret, config)
    if config.algorithm == "bcrypt":
        return _hash_bcrypt(secret, config)
    return _hash_scrypt(secret, config)


def _hash_argon2(secret: bytes, config: PasswordConfig) -> str:
    a2 = config.argon2
    if a2.memory < 8 * a2.parallelism:
        raise ValueError("argon2 memory must be at least 8 KiB per lane (8 x parallelism)")
    if max(a2.memory, a2.iterations) > _UINT32_MAX:
        raise ValueError("argon2 memory and iterations must be below 2**32")
    salt = os.urandom(a2.salt_length)
    costs = (a2.memory, a2.iterations, a2.parallelism)
    try:
        tag = _argon2_tag(
            secret, salt, _ARGON2_TYPES[a2.variant], ARGON2_VERSION, costs, a2.key_length
        )
    except ValueError as exc:
        raise ValueError(f"argon2 could not hash with these parameters: {exc}") from None
    # The PHC string exactly as argon2's encoder (and so argon2-cffi) writes it.
    settings = f"v={ARGON2_VERSION}$m={a2.memory},t={a2.iterations},p={a2.parallelism}"
    return f"${a2.variant}${settings}${_b64encode(salt)}${_b64encode(tag)}"


def _hash_pbkdf2(secret: bytes, config: PasswordConfig) -> str:
    pb = config.pbkdf2
    salt = os.urandom(pb.salt_length)
    key = hashlib.pbkdf2_hmac(pb.variant, secret, salt, pb.iterations)
    prefix = "$pbkdf2$" if pb.variant == "sha1" else f"$pbkdf2-{pb.variant}$"
    return f"{prefix}{pb.iterations}${_ab64encode(salt)}${_ab64encode(key)}"


def _hash_bcrypt(secret: bytes, config: PasswordConfig) -> str:
    cost = config.bcrypt.cost
    if config.bcrypt.variant == "sha256":
        salt = bcrypt.gensalt(rounds=cost, prefix=b"2b").decode("ascii")[7:]
        inner = bcrypt.hashpw(
            _bcrypt_sha256_input(secret, salt, 2), f"$2b${cost:02d}${salt}".encode()
        )
        checksum = inner.decode("ascii")[29:]
        return f"$bcrypt-sha256$v=2,t=2b,r={cost}${salt}${checksum}"
    if len(secret) > BCRYPT_MAX_PASSWORD_BYTES:
        # SECURITY: never truncate silently; the caller must refuse such a password.
        raise ValueError(
            f"bcrypt cannot hash passwords longer than {BCRYPT_MAX_PASSWORD_BYTES} bytes "
            "(use the 'sha256' variant or another algorithm)"
        )
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=cost, prefix=b"2b")).decode("ascii")


def _hash_scrypt(secret: bytes, config: PasswordConfig) -> str:
    sc = config.scrypt
    n = 1 << sc.iterations
    maxmem = _scrypt_maxmem(n, sc.block_size, sc.parallelism)
    if maxmem > _INT_MAX or sc.block_size * sc.parallelism >= 2**30:
        raise ValueError("scrypt parameters need too much memory (lower iterations or block_size)")
    salt = os.urandom(sc.salt_length)
    key = hashlib.scrypt(
        secret,
        salt=salt,
        n=n,
        r=sc.block_size,
        p=sc.parallelism,
        maxmem=maxmem,
        dklen=sc.key_length,
    )
    settings = f"ln={sc.iterations},r={sc.block_size},p={sc.parallelism}"
    return f"$scrypt${settings}${_b64encode(salt)}${_b64encode(key)}"
