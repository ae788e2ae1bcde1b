"""molssl: self-supervised molecular pre-training with pluggable objectives."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("molssl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
