"""Files that are either whole or absent, written as an ordinary write would leave them.

Long studies are killed at arbitrary moments (preemption, time limits). Anything detpre or
kaisteval writes that a later run reads back (subsets, proposals, checkpoints, reports,
figures, result files) goes through :func:`atomic_write`: written to a temporary file in the
same directory, flushed to disk, then renamed over the target, so a reader sees the old file
or the new one, never half. It lives in kaisteval, the dependency-free bottom layer, so that
both packages share this one writer; ``detpre.utils.file_io`` re-exports it.

Two things an ordinary ``open(path, "w")`` does are kept: the new file's permissions follow
the umask (``mkstemp`` alone would make every checkpoint 0600, unreadable to the rest of a
team sharing a project folder), or stay those of the file it replaces. And a failed write —
a full disk, a read-only or forbidden folder — is a :class:`WriteError` that names the
path, with nothing left behind and the previous file untouched.
"""

import contextlib
import errno
import os
import stat
import tempfile
from typing import IO, Iterator, Optional

__all__ = ["WriteError", "atomic_write"]


class WriteError(OSError):
    """A file could not be written; ``str()`` is one line naming the path and the reason."""

    def __init__(self, path: str, cause: BaseException):
        code = getattr(cause, "errno", None) or errno.EIO
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(code, reason, path)
        self.path = path

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror}"


def _new_file_mode(path: str) -> int:
    """The permissions ``open(path, "w")`` would leave: the existing file's, or 0666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


class _WatchedFile:
    """A file whose failed ``write`` is remembered: ``torch.save`` swallows the ``OSError`` of a
    full disk and raises ``RuntimeError: ... unexpected pos`` instead, without the reason."""

    def __init__(self, f: IO):
        self._file = f
        self.error: Optional[OSError] = None

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block succeeds.

    Any ``OSError`` while creating, writing, flushing or renaming it (also one that a writer
    such as ``torch.save`` turned into another exception) becomes a :class:`WriteError` naming
    ``path``; the temporary file is removed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    watched = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, mode) as f:
            watched = _WatchedFile(f)
            yield watched
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as e:
        raise WriteError(path, e) from e
    except Exception as e:
        if watched is not None and watched.error is not None:
            raise WriteError(path, watched.error) from e
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
