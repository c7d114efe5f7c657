"""Atomic writes: a temporary name in the target's directory, fsync'ed and renamed.

A killed job never leaves a half-written file or directory under the final name, and a
temporary is created exclusively (mkstemp/mkdtemp), never through a planted symlink. A write
that the file system refuses (no space, quota, read-only, permission) raises `OutputError`, a
`ForcematchError` naming the path and what to do, instead of a bare OSError.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from forcematch.errors import ForcematchError

# Temporary names start with "." and end in ".tmp": `.<name>.<random>.tmp`. New files get the
# permissions open() would give them (0o666 less the umask), directories 0o777 less the umask.
#
#   atomic_write_bytes(path, data)        bytes
#   atomic_write_text(path, text)         str (UTF-8 unless told)
#   write_json(path, payload)             indented, key-sorted JSON and a final newline
#   with atomic_open(path, "w") as f:     a file handle (np.savez, csv.writer, fig.savefig...)
#   with atomic_path(path) as tmp:        a temporary path, for writers that need a file name
#                                         (h5py.File(tmp, "w"))
#   with atomic_directory(path) as tmp:   a whole directory, renamed into place when complete
#   with output_errors(path):             any other output write: OSError -> OutputError

# The errors of a write that the file system refuses: the user's to fix, not a bug (no space,
# quota, file-size limit; permission, read-only file system).
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM,
                           errno.EROFS})


class OutputError(ForcematchError):
    """An output the file system would not take: `path`, the OSError, and what to do."""

    def __init__(self, path: str | os.PathLike, error: OSError, hint: str | None = None):
        self.path, self.error = Path(path), error
        self.hint = hint or fix_for(error)
        super().__init__(f"cannot write {self.path}: {error.strerror or error}; {self.hint}")

    def with_hint(self, hint: str) -> OutputError:
        """The same error with `hint` (what to do, in the stage's terms) instead."""
        return OutputError(self.path, self.error, hint)


_FIXES = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some space or raise the disk quota",
    errno.EFBIG: "raise the file-size limit (ulimit -f) or free some space",
}


def fix_for(error: OSError) -> str:
    """What to do about an OSError of OUTPUT_ERRNOS, in a few words."""
    fix = _FIXES.get(error.errno, "make the output directory writable or choose another "
                                  "--out-dir")
    return f"{fix}, then rerun"


@contextmanager
def output_errors(path: str | os.PathLike, *, own_name: bool = False) -> Iterator[None]:
    """Turn an OSError of OUTPUT_ERRNOS raised in the block into OutputError naming `path`
    (with `own_name`, the file the error names, if any: e.g. the parent that mkdir could not
    create); every other exception passes unchanged. Atomic writes name their target, never
    the temporary file the error was about."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS:
            raise
        raise OutputError((own_name and exc.filename) or path, exc) from exc


def _umask() -> int:
    """The process umask, read without changing it where /proc tells it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name[:100]}."  # a short prefix keeps the name under NAME_MAX


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (where the platform can open directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temp_file(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside `path`: (open descriptor, its path)."""
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0o600 -> what open() would give
    except OSError:
        pass  # a file system without modes: keep mkstemp's
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    return fd, Path(name)


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync_directory(path.parent)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a new temporary file beside `path` for writing; it becomes `path` on a clean exit.

    `mode` is a writing mode of open() ("wb", "w", ...; "x"/"a" make no sense here) and
    `kwargs` go to open() (encoding, newline, ...). On leaving the block the file is flushed,
    fsync'ed and renamed over `path`; if the block raises, the temporary is removed and `path`
    is untouched. The handle suits anything that writes to a file object: ``np.savez(f, ...)``,
    ``csv.writer(f)``, ``fig.savefig(f, format="png")``.
    """
    path = Path(path)
    with output_errors(path):
        fd, tmp = _new_temp_file(path)
    try:
        try:
            handle = os.fdopen(fd, mode, **kwargs)
        except BaseException:
            os.close(fd)
            raise
        with output_errors(path), handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with output_errors(path):
            _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for writers that need a file name; it becomes `path`.

    The temporary exists (empty, created exclusively) when the block starts; write it by name,
    e.g. ``with atomic_path(out) as tmp: h5py.File(tmp, "w")``, and close it within the block.
    On a clean exit it is fsync'ed and renamed over `path`; if the block raises, it is removed.
    """
    path = Path(path)
    with output_errors(path):
        fd, tmp = _new_temp_file(path)
    os.close(fd)
    try:
        with output_errors(path):
            yield tmp
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_open`); returns `path` as a Path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically, encoded with `encoding`; returns `path` as a Path."""
    return atomic_write_bytes(path, text.encode(encoding))


def _non_finite(payload: Any, where: str = "") -> tuple[str, float] | None:
    """(key path, value) of the first NaN or infinite float in `payload`, else None."""
    if isinstance(payload, float):
        return None if math.isfinite(payload) else (where or "the value", payload)
    if isinstance(payload, dict):
        items: Iterable = ((f"{where}.{k}" if where else str(k), v) for k, v in payload.items())
    elif isinstance(payload, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(payload))
    else:
        return None
    for key, value in items:
        found = _non_finite(value, key)
        if found is not None:
            return found
    return None


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write `payload` as indented, key-sorted JSON with a final newline, atomically.

    Strict JSON: a NaN or infinite number raises ForcematchError naming its key (JSON has no
    such tokens; Python's json module would write bare `NaN`, which other readers reject).
    """
    found = _non_finite(payload)
    if found is not None:
        raise ForcematchError(f"{path}: '{found[0]}' is {found[1]}: JSON has no NaN or "
                              "infinity, so it was not written")
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory below `root` (links are not followed)."""
    for directory, _, files in os.walk(root):
        for name in files:
            file = Path(directory, name)
            if file.is_symlink() or not file.is_file():
                continue
            fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_directory(Path(directory))


def _swap_directory(tmp: Path, path: Path) -> None:
    """Rename the directory `tmp` to `path`, moving whatever is at `path` aside first."""
    if not os.path.lexists(path):
        _replace(tmp, path)
        return
    trash = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=path.parent))
    try:
        os.rename(path, trash / "old")
        try:
            _replace(tmp, path)
        except BaseException:
            os.rename(trash / "old", path)
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A new, empty temporary directory beside `path`; on a clean exit it becomes `path`, whole.

    Write the directory's files into the yielded path (plain writes suffice; every file is
    fsync'ed before the rename). Whatever is at `path` (a previous version) is renamed aside and
    removed once the new directory is in place, so `path` is always either the old or the
    complete new directory (for an instant between the two renames, absent). If the block
    raises, the temporary directory is removed and `path` is untouched.
    """
    path = Path(path)
    with output_errors(path):
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        with output_errors(path):
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
            _fsync_tree(tmp)
            _swap_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(path: str | os.PathLike, names: Iterable[str], option: str) -> None:
    """Refuse to replace an existing directory `path` (as `atomic_directory` does, whole) when
    it holds anything but files named `names`: a mistyped `--out-dir .` must not wipe a
    directory of the user's. `option` names the command-line option, for the message."""
    path = Path(path)
    if not path.is_dir():
        return
    foreign = sorted(p.name for p in path.iterdir() if p.name not in set(names))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ForcematchError(
            f"output directory {path} holds files this stage did not write ({shown}); it would "
            f"be replaced whole: choose a new or empty {option}")


def write_csv(path: str | os.PathLike, columns: dict[str, Iterable]) -> Path:
    """Write `columns` (name -> values, all of one length) as a CSV with a header, atomically."""
    import csv
    import io

    keys = list(columns)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(keys)
    writer.writerows(zip(*(columns[k] for k in keys), strict=True))
    return atomic_write_text(path, text.getvalue())
