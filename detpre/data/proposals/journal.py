"""Resumable and sharded proposal runs: the per-image journal and the shard files.

A run appends each finished image to ``<output>.partial`` (a pickled header, then one record
an image); a restarted run with the same settings skips the images found there (a record
torn by a kill is cut off), and the journal is removed once the output is written.

Sharding splits a dataset into ``N`` contiguous blocks of images: ``--shard i/N`` computes
block ``i`` into its own shard file (with its own journal), so a SLURM array (or any
scheduler) runs the blocks anywhere, in any order, and reruns a failed one alone; the merge
step checks that the ``N`` shard files were made with the same settings over exactly the
dataset's images, and writes the output. The output's bytes are the same as those of one
unsharded run: everything in it is ordered by the dataset, never by completion.
"""

import os
import pickle
import re
from typing import Any, Dict, Sequence, Tuple, TypeVar

from ...utils.file_io import WriteError

__all__ = ["JournalFile", "parse_shard", "read_journal", "shard_block", "shard_path"]

T = TypeVar("T")


def parse_shard(text: str) -> Tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"--shard {text!r}: expected i/N with 0 <= i < N, e.g. 3/64.")
    return int(match.group(1)), int(match.group(2))


def shard_block(items: Sequence[T], index: int, count: int) -> Sequence[T]:
    """Block ``index`` of ``count`` contiguous, near-equal blocks of ``items``."""
    n = len(items)
    return items[index * n // count : (index + 1) * n // count]


def shard_path(output: str, index: int, count: int) -> str:
    """The shard file of block ``index`` of ``count`` of ``output``."""
    return f"{output}.shard-{index:05d}-of-{count:05d}.pkl"


def read_journal(path: str, header: Dict[str, Any]) -> Dict[Any, Any]:
    """Records ``{image_id: result}`` finished by an earlier run written with ``header``."""
    done: Dict[Any, Any] = {}
    if not os.path.exists(path):
        return done
    with open(path, "rb+") as f:
        try:
            found = pickle.load(f)
        except Exception:  # noqa: BLE001  (a header torn by a kill: nothing was journaled)
            f.truncate(0)
            return done
        if found != header:
            raise ValueError(
                f"{path} was written with other settings ({found}); delete it or rerun with those "
                f"settings (now: {header})."
            )
        good = f.tell()
        while True:
            try:
                image_id, result = pickle.load(f)
            except Exception:  # noqa: BLE001  (end of file, or the torn record of a kill)
                break
            done[image_id] = result
            good = f.tell()
        f.truncate(good)
    return done


class JournalFile:
    """The journal, open for appending (header written when new); a failed write is a
    ``WriteError`` naming it."""

    def __init__(self, path: str, header: Dict[str, Any]):
        self._path = path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "ab")
        except OSError as e:
            raise WriteError(path, e) from e
        if self._file.tell() == 0:
            self._dump(header)

    def __enter__(self) -> "JournalFile":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def _dump(self, obj: Any) -> None:
        try:
            pickle.dump(obj, self._file)
            self._file.flush()
        except OSError as e:
            raise WriteError(self._path, e) from e

    def append(self, image_id: Any, result: Any) -> None:
        self._dump((image_id, result))

    def remove(self) -> None:
        self._file.close()
        os.unlink(self._path)
