"""Status lines of a replica run: to a callback, to stdout (flushed), or nowhere. No units."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], object] | None


def emit(progress: Progress, message: str) -> None:
    """Hand `message` to `progress` (None: drop it; print: print and flush at once)."""
    if progress is None:
        return
    if progress is print:
        print(message, flush=True)
    else:
        progress(message)
