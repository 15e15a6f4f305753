"""The portal: self-service password reset and sign-in behind nginx."""

from portal.config import Config, read_config

__version__ = "0.1.0"

__all__ = ["Config", "__version__", "read_config"]
