"""ldap3's names, imported in one place under the one warning filter their import needs.

ldap3 2.9.1 imports names that pyasn1 0.6 deprecated (tagMap, typeMap): harmless, but under
warnings-as-errors (the test suite) the import itself would fail. ldap3 ships no type
information, so everything here is `Any` to mypy.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    from ldap3 import (
        AUTO_BIND_NONE,
        BASE,
        MODIFY_REPLACE,
        NONE,
        SIMPLE,
        SUBTREE,
        SYNC,
        Connection,
        Server,
        Tls,
    )
    from ldap3.core.exceptions import (
        LDAPCommunicationError,
        LDAPException,
        LDAPResponseTimeoutError,
        LDAPStartTLSError,
    )
    from ldap3.operation.search import parse_filter
    from ldap3.protocol.sasl.sasl import sasl_prep
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

__all__ = [
    "AUTO_BIND_NONE",
    "BASE",
    "MODIFY_REPLACE",
    "NONE",
    "SIMPLE",
    "SUBTREE",
    "SYNC",
    "Connection",
    "LDAPCommunicationError",
    "LDAPException",
    "LDAPResponseTimeoutError",
    "LDAPStartTLSError",
    "Server",
    "Tls",
    "escape_filter_chars",
    "parse_dn",
    "parse_filter",
    "sasl_prep",
]
