"""Client TLS with Authelia's keys: what to trust, and which certificate to present.

Authelia's meaning (docs: configuration/miscellaneous/introduction "certificates_directory" and
configuration/prologue/common "TLS Configuration"; internal/utils/crypto.go NewTLSConfig and
NewX509CertPool; internal/configuration/validator/shared.go ValidateTLSConfig):

- the top-level `certificates_directory`: every `*.cer`, `*.crt` and `*.pem` file in that folder
  (PEM, one or more certificates each) joins the system's trust store for every outgoing TLS
  connection (LDAP, SMTP);
- `tls.certificate_chain` with `tls.private_key`: the client certificate (leaf first, then its
  intermediates) presented for mutual TLS; the key must belong to the chain's first certificate.

The portal refuses, where Authelia stays silent, a chain without its key or a key without its
chain: a chain alone is usually a configuration written when the portal read it as a CA to trust.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import SecretStr

from portal.errors import StartupCheckError

if TYPE_CHECKING:
    from portal.config import TlsConfig

# One PEM certificate block (RFC 7468 section 5); OpenSSL then parses what is inside.
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----"
)

# Authelia's NewX509CertPool reads these (case-insensitive); other files are left alone.
CERTIFICATE_SUFFIXES = (".cer", ".crt", ".pem")

TLS_VERSIONS = {
    "TLS1.0": ssl.TLSVersion.TLSv1,
    "TLS1.1": ssl.TLSVersion.TLSv1_1,
    "TLS1.2": ssl.TLSVersion.TLSv1_2,
    "TLS1.3": ssl.TLSVersion.TLSv1_3,
}

OLD_MEANING = (
    "certificate_chain: is the client certificate presented for mutual TLS (as in Authelia) and "
    "needs private_key; to trust a private CA instead, remove certificate_chain and put the CA's "
    "certificate in the folder named by the top-level certificates_directory"
)
KEY_WITHOUT_CHAIN = (
    "private_key: needs certificate_chain, the client certificate (and its intermediates) the "
    "key belongs to"
)


def client_certificate_problems(chain: str | None, key: SecretStr | None) -> list[str]:
    """Return why certificate_chain and private_key cannot be used as a client certificate.

    Each problem is a sentence naming the key (`certificate_chain: ...`); none holds any part
    of the private key. Refused as Authelia's ValidateTLSConfig refuses it: a key that does not
    belong to the chain's first certificate; beyond Authelia: one without the other, and text
    that is not PEM. An empty list means both are absent or both usable.
    """
    chain = (chain or "").strip()
    key_text = "" if key is None else key.get_secret_value().strip()
    if not chain and not key_text:
        return []
    if not key_text:
        return [OLD_MEANING]
    if not chain:
        return [KEY_WITHOUT_CHAIN]
    problems: list[str] = []
    try:
        certificates = x509.load_pem_x509_certificates(chain.encode())
    except ValueError:
        certificates = []
        problems.append("certificate_chain: holds no PEM certificate ('-----BEGIN CERTIFICATE')")
    private_key = _private_key(key_text, problems)
    if certificates and private_key is not None:
        if _public_bytes(private_key) != certificates[0].public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            problems.append(
                "private_key: does not belong to the first certificate of certificate_chain "
                "(the chain must start with the client certificate itself)"
            )
    return problems


def _private_key(key: str, problems: list[str]) -> PrivateKeyTypes | None:
    """Parse the key, appending a problem that quotes none of it when it cannot be read."""
    try:
        return serialization.load_pem_private_key(key.encode(), password=None)
    except TypeError:
        problems.append("private_key: is protected by a password; give it unencrypted")
    except (ValueError, UnsupportedAlgorithm):
        # SECURITY: the library's message is kept out: it could echo part of the key.
        problems.append("private_key: holds no usable PEM private key ('-----BEGIN ... KEY')")
    return None


def _public_bytes(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificates_directory_problems(directory: Path) -> list[str]:
    """Return why the folder cannot serve as certificates_directory: unreadable, or a bad file.

    Every `*.cer`, `*.crt`, `*.pem` file must hold at least one PEM certificate (Authelia's
    NewX509CertPool refuses the same files); each problem names the file or the folder.
    """
    try:
        read_certificates_directory(directory)
    except StartupCheckError as exc:
        return str(exc).splitlines()
    return []


def read_certificates_directory(directory: Path) -> str:
    """Return the PEM text of every certificate in the folder's certificate files, in name order.

    OpenSSL judges each file, as it will when it trusts them: a certificate that `cryptography`
    frowns on but OpenSSL takes (a CA with a negative serial number, as Samba's own makes) is
    trusted, and only CERTIFICATE blocks are kept (a private key left in a .pem stays out).
    Raise StartupCheckError listing, one per line, each file that cannot be read or holds no
    PEM certificate, or saying the folder cannot be read.
    """
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(directory)
            if entry.name.lower().endswith(CERTIFICATE_SUFFIXES) and not entry.is_dir()
        )
    except OSError as exc:
        raise StartupCheckError(
            f"cannot read the folder {directory}: {exc.strerror or exc}"
        ) from None
    texts, problems = [], []
    for name in names:
        path = directory / name
        try:
            text = path.read_bytes().decode("ascii", errors="replace")
        except OSError as exc:
            problems.append(f"cannot read {path}: {exc.strerror or exc}")
            continue
        certificates = "".join(block + "\n" for block in _PEM_CERTIFICATE.findall(text))
        try:
            if not certificates:
                raise ssl.SSLError("no CERTIFICATE block")
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=certificates)
        except ssl.SSLError:
            problems.append(f"{path} holds no PEM certificate")
            continue
        texts.append(certificates)
    if problems:
        raise StartupCheckError("\n".join(problems))
    return "".join(texts)


def client_context(
    tls: TlsConfig, certificates_directory: Path | None, where: str
) -> ssl.SSLContext:
    """Build a client ssl.SSLContext as Authelia's NewTLSConfig does; it reads files (a thread).

    Trust: the system's CAs plus every certificate in certificates_directory, the server's name
    checked; versions bounded by minimum_version/maximum_version ('TLS1.2'); skip_verify turns
    every check off; the client certificate is presented when certificate_chain and private_key
    are both given. `where` prefixes messages ('authentication_backend.ldap.tls'). Raise
    StartupCheckError with a message that holds no key material.
    """
    problems = client_certificate_problems(tls.certificate_chain, tls.private_key)
    if TLS_VERSIONS[tls.minimum_version] > TLS_VERSIONS[tls.maximum_version]:
        # As Authelia's ValidateTLSConfig.
        problems.insert(0, "minimum_version: must not be above maximum_version")
    if problems:
        raise StartupCheckError("\n".join(f"{where}.{p}" for p in problems))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = TLS_VERSIONS[tls.minimum_version]
    context.maximum_version = TLS_VERSIONS[tls.maximum_version]
    if tls.skip_verify:
        # SECURITY: explicitly asked for (and warned about by the caller); off by default.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if certificates_directory is not None:
            try:
                trusted = read_certificates_directory(certificates_directory)
            except StartupCheckError as exc:
                lines = str(exc).splitlines()
                raise StartupCheckError(
                    "\n".join(f"certificates_directory: {line}" for line in lines)
                ) from None
            if trusted:
                context.load_verify_locations(cadata=trusted)
    if tls.certificate_chain and tls.private_key is not None:
        _load_client_certificate(context, tls.certificate_chain, tls.private_key, where)
    return context


def _load_client_certificate(
    context: ssl.SSLContext, chain: str, key: SecretStr, where: str
) -> None:
    """Load the client certificate; SSLContext reads it only from files, so give it private ones.

    SECURITY: on Linux the files are anonymous memory (memfd_create, read through /proc/self/fd):
    the private key never reaches a disk, not even when the process dies while loading. Elsewhere
    a 0700 folder of 0600 files, deleted at once.
    """
    with _private_files((chain, key.get_secret_value())) as (chain_path, key_path):
        try:
            context.load_cert_chain(chain_path, key_path)
        except ssl.SSLError:
            # SECURITY: OpenSSL's reason names no key material, but say only what is known.
            raise StartupCheckError(
                f"{where}: the client certificate and private_key cannot be loaded"
            ) from None


@contextlib.contextmanager
def _private_files(texts: tuple[str, ...]) -> Iterator[list[str]]:
    """Yield a path for each text, readable by this process only, gone when the block ends."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds = [os.memfd_create("portal-tls", os.MFD_CLOEXEC) for _ in texts]
        try:
            for fd, text in zip(fds, texts, strict=True):
                os.write(fd, text.encode())
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="portal-tls-") as directory:  # mode 0700
        paths = [os.path.join(directory, str(i)) for i in range(len(texts))]
        for path, text in zip(paths, texts, strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        yield paths
