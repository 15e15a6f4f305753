"""`authentication_backend.ldap`: the directory server (Authelia: schema/authentication.go).

After validation the section holds the effective values: the filters, additional DNs and
attributes the configuration leaves out (or sets to '') come from its `implementation`
(ldap_implementations.py), as Authelia's validator sets them; `problems()` says what is still
missing, and the loader reports it with every other problem.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from portal.config.authentication_backend.ldap_implementations import (
    implementation_values,
    ldap_problems,
)
from portal.config.tls import TlsConfig
from portal.config.types import Duration, LdapAddress, Model


class LdapPoolingConfig(Model):
    """Connection pooling to the directory server."""

    enable: bool = False
    count: int = Field(5, ge=1)
    retries: int = Field(2, ge=0)
    timeout: Duration = timedelta(seconds=10)


class LdapAttributesConfig(Model):
    """Which LDAP attributes hold what (defaults depend on the implementation).

    Once the section is validated, username, display_name, mail and group_name are set;
    distinguished_name and member_of are None where neither the configuration nor the
    implementation names one.
    """

    distinguished_name: str | None = None
    username: str | None = None
    display_name: str | None = None
    mail: str | None = None
    member_of: str | None = None
    group_name: str | None = None


class LdapBackendConfig(Model):
    """An LDAP directory, its keys filled in from the `implementation` where left out."""

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

    @model_validator(mode="after")
    def _implementation_defaults(self) -> Self:
        section, attributes = implementation_values(self)
        for key, value in section.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "attributes", self.attributes.model_copy(update=attributes))
        return self

    def problems(self) -> list[str]:
        """Return what the filled-in section still lacks, each naming its key's full path.

        The "required with implementation X", {input} and {memberof:*} placeholder and service
        account checks (ldap_implementations.ldap_problems); an empty list when it can be used.
        """
        return ldap_problems(self)
