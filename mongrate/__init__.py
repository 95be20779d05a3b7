"""mongrate: versioned schema and data migrations for MongoDB.

``Operations`` is the type of the ``op`` a revision's ``upgrade(op)`` and ``downgrade(op)``
receive: ``def upgrade(op: Operations) -> None:``. It is loaded on first use, so importing
mongrate (and ``mongrate --help``) stays free of the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mongrate._version import __version__

if TYPE_CHECKING:
    from mongrate.operations.ops import Operations

__all__ = ["Operations", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Operations":
        from mongrate.operations.ops import Operations

        return Operations
    raise AttributeError(f"module 'mongrate' has no attribute {name!r}")
