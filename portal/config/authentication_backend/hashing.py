"""`authentication_backend.file.password`: how the file backend hashes new passwords.

Authelia: internal/configuration/schema/authentication.go (AuthenticationBackendFilePassword*).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from portal.config.types import Model


class Argon2Config(Model):
    """argon2 parameters (Authelia's defaults)."""

    variant: Literal["argon2id", "argon2i", "argon2d"] = "argon2id"
    iterations: int = Field(3, ge=1)
    memory: int = Field(65536, ge=8, description="KiB")
    parallelism: int = Field(4, ge=1, le=255)
    key_length: int = Field(32, ge=16, le=1024)
    salt_length: int = Field(16, ge=8, le=1024)


class Sha2CryptConfig(Model):
    """SHA-crypt parameters (Authelia's defaults)."""

    variant: Literal["sha512", "sha256"] = "sha512"
    iterations: int = Field(50000, ge=1000, le=999999999)
    salt_length: int = Field(16, ge=1, le=16)


class Pbkdf2Config(Model):
    """PBKDF2 parameters (Authelia's defaults)."""

    variant: Literal["sha1", "sha224", "sha256", "sha384", "sha512"] = "sha512"
    iterations: int = Field(310000, ge=100000)
    salt_length: int = Field(16, ge=8, le=1024)


class BcryptConfig(Model):
    """bcrypt parameters (Authelia's defaults)."""

    variant: Literal["standard", "sha256"] = "standard"
    cost: int = Field(12, ge=10, le=31)


class ScryptConfig(Model):
    """scrypt parameters (Authelia's defaults); iterations is log2 of N."""

    variant: Literal["scrypt"] = "scrypt"
    iterations: int = Field(16, ge=1, le=58)
    block_size: int = Field(8, ge=1)
    parallelism: int = Field(1, ge=1)
    key_length: int = Field(32, ge=16, le=1024)
    salt_length: int = Field(16, ge=8, le=1024)


class PasswordConfig(Model):
    """How the file backend hashes new passwords."""

    algorithm: Literal["argon2", "sha2crypt", "pbkdf2", "bcrypt", "scrypt"] = "argon2"
    argon2: Argon2Config = Argon2Config()
    sha2crypt: Sha2CryptConfig = Sha2CryptConfig()
    pbkdf2: Pbkdf2Config = Pbkdf2Config()
    bcrypt: BcryptConfig = BcryptConfig()
    scrypt: ScryptConfig = ScryptConfig()
