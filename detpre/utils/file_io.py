"""Files that are either whole or absent.

Long studies are killed at arbitrary moments (preemption, time limits). Anything detpre
writes that a later run reads back (subsets, proposals, checkpoints, reports) goes through
:func:`atomic_write`: written to a temporary file in the same directory, flushed to disk,
then renamed over the target, so a reader sees the old file or the new one, never half.
"""
import contextlib
import os
import tempfile
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
