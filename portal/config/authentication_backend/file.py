"""`authentication_backend.file`: the YAML users file (Authelia: schema/authentication.go)."""

from __future__ import annotations

from pathlib import Path

from portal.config.authentication_backend.hashing import PasswordConfig
from portal.config.types import Model


class FileSearchConfig(Model):
    """How sign-in and reset identifiers are matched against the users file."""

    email: bool = False
    case_insensitive: bool = False


class FileBackendConfig(Model):
    """The YAML users file."""

    path: Path
    watch: bool = False
    search: FileSearchConfig = FileSearchConfig()
    password: PasswordConfig = PasswordConfig()
