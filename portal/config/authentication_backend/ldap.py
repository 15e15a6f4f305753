"""`authentication_backend.ldap`: the directory server (Authelia: schema/authentication.go)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr

from portal.config.tls import TlsConfig
from portal.config.types import Duration, LdapAddress, Model


class LdapPoolingConfig(Model):
    """Connection pooling to the directory server."""

    enable: bool = False
    count: int = Field(5, ge=1)
    retries: int = Field(2, ge=0)
    timeout: Duration = timedelta(seconds=10)


class LdapAttributesConfig(Model):
    """Which LDAP attributes hold what (defaults depend on the implementation)."""

    distinguished_name: str | None = None
    username: str | None = None
    display_name: str | None = None
    mail: str | None = None
    member_of: str | None = None
    group_name: str | None = None


class LdapBackendConfig(Model):
    """An LDAP directory (schema only for now)."""

    address: LdapAddress
    implementation: Literal[
        "custom", "activedirectory", "rfc2307bis", "freeipa", "lldap", "glauth"
    ] = "custom"
    timeout: Duration = timedelta(seconds=5)
    start_tls: bool = False
    tls: TlsConfig = TlsConfig()
    pooling: LdapPoolingConfig = LdapPoolingConfig()
    base_dn: str | None = None
    additional_users_dn: str | None = None
    users_filter: str | None = None
    additional_groups_dn: str | None = None
    groups_filter: str | None = None
    group_search_mode: Literal["filter", "memberof"] = "filter"
    permit_referrals: bool = False
    permit_unauthenticated_bind: bool = False
    permit_feature_detection_failure: bool = False
    user: str | None = None
    password: SecretStr | None = None
    attributes: LdapAttributesConfig = LdapAttributesConfig()
