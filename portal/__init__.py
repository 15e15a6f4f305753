"""The portal: self-service password reset and sign-in behind nginx."""

from portal.app import create_app
from portal.config import Config, load_config, read_config

__version__ = "0.1.0"

__all__ = ["Config", "__version__", "create_app", "load_config", "read_config"]
