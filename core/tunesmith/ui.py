"""How the pipeline talks to a person. The CLI passes a Rich implementation; tests pass :class:`Quiet`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Quiet:
    """Says nothing. Subclass and override to show progress."""

    def step(self, text: str) -> None:
        """A new phase of the run begins."""

    def note(self, text: str) -> None:
        """A detail worth a line."""

    def warn(self, text: str) -> None:
        """Something the user should look at; never fatal."""

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        """Yields ``update(completed, total=None)``; ``total`` may be unknown until work starts."""
        yield lambda completed, total=None: None
