"""Client TLS settings, shared by ldap, smtp and postgres (Authelia: schema/shared.go, TLS)."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from portal.config.types import Model

TlsVersion = Literal["TLS1.0", "TLS1.1", "TLS1.2", "TLS1.3"]


class TlsConfig(Model):
    """Client TLS to a server (Authelia's `tls` block under ldap, smtp, postgres, redis).

    certificate_chain + private_key are the client certificate for mutual TLS, never a CA to
    trust (that is the top-level certificates_directory). What cannot be used (a key that does
    not match, one without the other, minimum above maximum version) is refused by
    portal.tls.client_context, which validate-config and start-up both call, so that it is
    reported together with the section's other problems.
    """

    server_name: str | None = None
    skip_verify: bool = False
    minimum_version: TlsVersion = "TLS1.2"
    maximum_version: TlsVersion = "TLS1.3"
    certificate_chain: str | None = None
    private_key: SecretStr | None = None
