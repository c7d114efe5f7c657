"""Atomic writes: a temporary name in the target's directory, fsync'ed and renamed.

A killed job never leaves a half-written file or directory under the final name, and a
temporary is created exclusively (mkstemp/mkdtemp), never through a planted symlink.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

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
    fd, tmp = _new_temp_file(path)
    try:
        try:
            handle = os.fdopen(fd, mode, **kwargs)
        except BaseException:
            os.close(fd)
            raise
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
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
    fd, tmp = _new_temp_file(path)
    os.close(fd)
    try:
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


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write `payload` as indented, key-sorted JSON with a final newline, atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


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
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _fsync_tree(tmp)
        _swap_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
