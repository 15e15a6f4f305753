"""An LDAP directory as the user backend (Authelia's `authentication_backend.ldap`)."""

from portal.users.ldap.backend import (
    AD_RULES_SENTENCE,
    GENERIC_REJECTION,
    LdapUserBackend,
    bind_passwords,
    check_ldap_settings,
    decode_ppolicy,
    decode_ppolicy_error,
    effective_settings,
    fill_filter,
    memberof_fragments,
    policy_sentence,
    prepare_password,
    same_dn_key,
    unicode_pwd,
)

__all__ = [
    "AD_RULES_SENTENCE",
    "GENERIC_REJECTION",
    "LdapUserBackend",
    "bind_passwords",
    "check_ldap_settings",
    "decode_ppolicy",
    "decode_ppolicy_error",
    "effective_settings",
    "fill_filter",
    "memberof_fragments",
    "policy_sentence",
    "prepare_password",
    "same_dn_key",
    "unicode_pwd",
]
