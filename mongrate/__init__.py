"""mongrate: versioned schema and data migrations for MongoDB."""

from mongrate._version import __version__

__all__ = ["__version__"]
