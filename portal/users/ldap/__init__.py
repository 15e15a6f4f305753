"""An LDAP directory as the user backend (Authelia's `authentication_backend.ldap`).

- settings.py     the search settings read from the configuration, the filters and their syntax
- passwords.py    a new password as the directory wants it; its answers as sentences
- connection.py   one connection: TLS, connect and bind, searches, what the server answered
- pool.py         LdapPool: worker threads, slots, idle connections, retries, hand-back
- backend.py      LdapUserBackend, the UserBackend methods
- state.py        account states read from the entry and from the bind's answer
- ldap3_names.py  ldap3's names, imported once under the warning filter they need
"""

from portal.users.ldap.backend import LdapUserBackend
from portal.users.ldap.passwords import (
    AD_RULES_SENTENCE,
    GENERIC_REJECTION,
    bind_passwords,
    decode_ppolicy,
    decode_ppolicy_error,
    policy_sentence,
    prepare_password,
    unicode_pwd,
)
from portal.users.ldap.pool import LdapPool
from portal.users.ldap.settings import (
    check_ldap_settings,
    effective_settings,
    fill_filter,
    memberof_fragments,
    same_dn_key,
)

__all__ = [
    "AD_RULES_SENTENCE",
    "GENERIC_REJECTION",
    "LdapPool",
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
