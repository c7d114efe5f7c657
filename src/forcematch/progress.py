"""Progress of long work, for people watching.

Every stage prints plain status lines (flushed, so Snakemake logs show them as they come):
simulate every tenth of the frames with rate and ETA, train every epoch, MD every ten chunks,
import and dataset every file. On a terminal, `bar(total, desc, unit)` adds a tqdm bar with
rate and ETA; in a log (stderr not a terminal) it is silent, so logs hold lines, not bar
redraws. The CLI's `--quiet` (`set_quiet(True)`) turns the bars off and sends the status lines
to /dev/null; errors and warnings still reach stderr.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

_STATE = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    _STATE["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _STATE["quiet"]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:
        pass


def bar(total: int, desc: str, unit: str) -> tqdm | _NoBar:
    """A tqdm bar over `total` `unit`s on a terminal (stderr), else one that does nothing;
    use as a context manager, `.update(n)`."""
    if _STATE["quiet"] or not sys.stderr.isatty():
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                leave=False)
