"""The one exception type for user mistakes.

The CLI prints a :class:`TunesmithError` in a few lines and exits with code 2; any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations


class TunesmithError(Exception):
    """A mistake the user can fix: bad config, bad data, a missing component."""

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details or [])

    def __str__(self) -> str:
        if not self.details:
            return self.message
        return self.message + "\n" + "\n".join(f"  {line}" for line in self.details)
