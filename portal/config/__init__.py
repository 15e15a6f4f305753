"""The configuration: frozen pydantic models in Authelia's shape, and how they are loaded.

One module per section, as Authelia's internal/configuration/schema/: `types` (durations,
addresses, networks, URLs, the base models), `server`, `log`, `identity_validation`,
`authentication_backend` (with its `file`, `ldap` and `hashing`), `password_policy`, `notifier`,
`session`, `storage`, `regulation`, `access_control`, `captcha`, `totp`, `webauthn`,
`identity_token`, `trusted_issuers`, `telemetry`, `tls` (client TLS, shared), `root` (`Config`,
every section together) and `loading` (YAML files, `PORTAL_*` / `AUTHELIA_*` and `*_FILE`
environment overrides, Authelia keys the portal ignores, error messages).

Import from here (`from portal.config import Config, load_config`): every name below is the
package's public surface; which module holds it may change.
"""

from portal.config.access_control import AccessControlConfig, AccessControlRule, GoRegex, Policy
from portal.config.authentication_backend import (
    AuthenticationBackendConfig,
    PasswordChangeConfig,
    PasswordResetConfig,
)
from portal.config.authentication_backend.file import FileBackendConfig, FileSearchConfig
from portal.config.authentication_backend.hashing import (
    Argon2Config,
    BcryptConfig,
    PasswordConfig,
    Pbkdf2Config,
    ScryptConfig,
    Sha2CryptConfig,
)
from portal.config.authentication_backend.ldap import (
    LdapAttributesConfig,
    LdapBackendConfig,
    LdapPoolingConfig,
)
from portal.config.captcha import (
    REMOTE_CAPTCHAS,
    AltchaConfig,
    CaptchaConfig,
    CaptchaEndpoint,
    CaptchaProvider,
)
from portal.config.identity_token import (
    IdentityTokenApplication,
    IdentityTokenConfig,
    IdentityTokenKey,
)
from portal.config.identity_validation import (
    DEFAULT_QUESTIONS,
    ElevatedSessionConfig,
    IdentityValidationConfig,
    ResetPasswordConfig,
    SecurityQuestionsConfig,
)
from portal.config.loading import (
    ENV_NOT_KEYS,
    ENV_PREFIXES,
    UNSUPPORTED_KEYS,
    Reading,
    describe_yaml_error,
    load_config,
    read_config,
    read_sections,
)
from portal.config.log import LogConfig
from portal.config.notifier import (
    DEFAULT_SUBJECT,
    FilesystemNotifierConfig,
    MailAddress,
    NotifierConfig,
    OutboxConfig,
    SmtpConfig,
    parse_mail_address,
)
from portal.config.password_hashing import PasswordHashingConfig
from portal.config.password_policy import (
    PasswordPolicyConfig,
    StandardPolicyConfig,
    ZxcvbnPolicyConfig,
)
from portal.config.regulation import RegulationConfig
from portal.config.root import Config
from portal.config.server import Endpoints, RateLimit, RateLimitBucket, RateLimits, ServerConfig
from portal.config.session import (
    RedisConfig,
    RedisHighAvailabilityConfig,
    RedisNodeConfig,
    SameSite,
    SessionConfig,
    SessionCookieConfig,
)
from portal.config.storage import LocalStorageConfig, PostgresStorageConfig, StorageConfig
from portal.config.telemetry import MetricsAddress, MetricsConfig, TelemetryConfig
from portal.config.tls import TlsConfig, TlsVersion
from portal.config.totp import TotpConfig
from portal.config.trusted_issuers import TrustedIssuerConfig
from portal.config.types import (
    Address,
    Duration,
    ExactlyOneOf,
    LdapAddress,
    Model,
    PostgresAddress,
    ServerAddress,
    SmtpAddress,
    check_url,
    host_in_domain,
    is_loopback_host,
    network,
    parse_duration,
    public_suffixes,
)
from portal.config.webauthn import WebAuthnConfig, WebAuthnFiltering, WebAuthnSelectionCriteria

__all__ = [
    "AccessControlConfig",
    "AccessControlRule",
    "Address",
    "AltchaConfig",
    "Argon2Config",
    "AuthenticationBackendConfig",
    "BcryptConfig",
    "CaptchaConfig",
    "CaptchaEndpoint",
    "CaptchaProvider",
    "check_url",
    "Config",
    "DEFAULT_QUESTIONS",
    "DEFAULT_SUBJECT",
    "describe_yaml_error",
    "Duration",
    "Endpoints",
    "ENV_NOT_KEYS",
    "ENV_PREFIXES",
    "ExactlyOneOf",
    "FileBackendConfig",
    "FileSearchConfig",
    "FilesystemNotifierConfig",
    "GoRegex",
    "host_in_domain",
    "ElevatedSessionConfig",
    "IdentityTokenApplication",
    "IdentityTokenConfig",
    "IdentityTokenKey",
    "IdentityValidationConfig",
    "is_loopback_host",
    "LdapAddress",
    "LdapAttributesConfig",
    "LdapBackendConfig",
    "LdapPoolingConfig",
    "load_config",
    "LocalStorageConfig",
    "LogConfig",
    "MailAddress",
    "MetricsAddress",
    "MetricsConfig",
    "Model",
    "network",
    "NotifierConfig",
    "OutboxConfig",
    "parse_duration",
    "parse_mail_address",
    "PasswordConfig",
    "PasswordPolicyConfig",
    "PasswordChangeConfig",
    "PasswordResetConfig",
    "Pbkdf2Config",
    "Policy",
    "PostgresAddress",
    "PostgresStorageConfig",
    "public_suffixes",
    "RateLimit",
    "RateLimitBucket",
    "RateLimits",
    "read_config",
    "read_sections",
    "Reading",
    "RedisConfig",
    "RedisHighAvailabilityConfig",
    "RedisNodeConfig",
    "PasswordHashingConfig",
    "RegulationConfig",
    "REMOTE_CAPTCHAS",
    "ResetPasswordConfig",
    "SameSite",
    "ScryptConfig",
    "SecurityQuestionsConfig",
    "ServerAddress",
    "ServerConfig",
    "SessionConfig",
    "SessionCookieConfig",
    "Sha2CryptConfig",
    "SmtpAddress",
    "SmtpConfig",
    "StandardPolicyConfig",
    "StorageConfig",
    "TlsConfig",
    "TlsVersion",
    "TelemetryConfig",
    "TotpConfig",
    "TrustedIssuerConfig",
    "WebAuthnConfig",
    "WebAuthnFiltering",
    "WebAuthnSelectionCriteria",
    "UNSUPPORTED_KEYS",
    "ZxcvbnPolicyConfig",
]
