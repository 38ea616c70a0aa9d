"""Reader for Piotr Dollar's bbGt text annotations (the format of the KAIST/Caltech benchmarks).

A file starts with ``% bbGt version=V`` and holds one object a line::

    label x y w h occlusion vx vy vw vh ignore angle

with (x, y) the top-left corner and (w, h) the size, in pixels, exactly as drawn (no 0/1-based
shift is applied: the toolbox compares ground truth and detections in the same frame, so a
shift here would bias every IoU). Versions 0 and 1 carry the first 10 fields, version 2 adds
``ignore`` and version 3 ``angle`` (the field counts ``ms=[10 10 11 12]`` of ``bbLoad`` in
``bbGt.m``, Piotr's Computer Vision Matlab Toolbox). A file without a header is read as
version 0, as ``bbLoad`` does.

This module is pure Python + numpy so that the evaluator CLI and the dataset registration
(``detpre.data.datasets.kaist``) share one parser and one set of error messages.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import List, NamedTuple, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "BBGTObject",
    "BBGTArrays",
    "BBGTFormatError",
    "parse_bbgt",
    "read_bbgt",
    "read_bbgt_arrays",
    "read_bbgt_many",
    "objects_to_arrays",
]

PathLike = Union[str, "os.PathLike[str]"]

# Number of whitespace-separated fields per object line for each bbGt version.
_FIELDS_PER_VERSION = {0: 10, 1: 10, 2: 11, 3: 12}
_HEADER = "% bbGt version="


class BBGTFormatError(ValueError):
    """A bbGt file does not follow the format; the message names the file and line."""


class BBGTObject(NamedTuple):
    """One annotated object; fields absent from older versions default to 0."""

    label: str
    x: float
    y: float
    w: float
    h: float
    occlusion: int = 0
    vx: float = 0.0
    vy: float = 0.0
    vw: float = 0.0
    vh: float = 0.0
    ignore: int = 0
    angle: float = 0.0

    @property
    def box_xywh(self) -> Tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)

    @property
    def box_xyxy(self) -> Tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


class BBGTArrays(NamedTuple):
    """The objects of one file as column arrays (what vectorised evaluation needs)."""

    labels: np.ndarray  # (N,) str
    boxes: np.ndarray  # (N, 4) float64, x y w h (top-left, pixels)
    occlusion: np.ndarray  # (N,) int64: 0 none, 1 partial, 2 heavy
    visible: np.ndarray  # (N, 4) float64, visible part x y w h (0 0 0 0 when not given)
    ignore: np.ndarray  # (N,) bool, the file's own ignore flag
    angle: np.ndarray  # (N,) float64

    def __len__(self) -> int:
        return len(self.labels)


def parse_bbgt(text: str, source: str = "<string>") -> List[BBGTObject]:
    """Parse the content of a bbGt file; ``source`` names it in error messages."""
    lines = text.splitlines()
    version, start = 0, 0
    if lines and lines[0].startswith("%"):
        head = lines[0].strip()
        if not head.startswith(_HEADER):
            raise BBGTFormatError(f"{source}:1: expected header '{_HEADER}<0-3>', got {head!r}")
        try:
            version = int(head[len(_HEADER) :])
        except ValueError:
            raise BBGTFormatError(f"{source}:1: unreadable bbGt version in {head!r}") from None
        if version not in _FIELDS_PER_VERSION:
            raise BBGTFormatError(f"{source}:1: unknown bbGt version {version} (known: 0-3)")
        start = 1
    n_fields = _FIELDS_PER_VERSION[version]
    objects = []
    for lineno, line in enumerate(lines[start:], start=start + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != n_fields:
            raise BBGTFormatError(
                f"{source}:{lineno}: expected {n_fields} fields for bbGt version {version} "
                f"(label x y w h occ vx vy vw vh ign ang), got {len(fields)}: {line.strip()!r}"
            )
        try:
            nums = [float(f) for f in fields[1:]]
        except ValueError:
            raise BBGTFormatError(f"{source}:{lineno}: non-numeric field in {line.strip()!r}") from None
        if not all(math.isfinite(n) for n in nums):
            raise BBGTFormatError(f"{source}:{lineno}: non-finite number in {line.strip()!r}")
        if not (nums[4].is_integer() and 0 <= nums[4] < 2**31):
            raise BBGTFormatError(
                f"{source}:{lineno}: occlusion must be a small non-negative integer in {line.strip()!r}"
            )
        if nums[2] < 0 or nums[3] < 0:
            raise BBGTFormatError(f"{source}:{lineno}: negative box size in {line.strip()!r}")
        extra = {}
        if n_fields > 10:
            extra["ignore"] = int(nums[9])
        if n_fields > 11:
            extra["angle"] = nums[10]
        objects.append(BBGTObject(fields[0], *nums[:4], int(nums[4]), *nums[5:9], **extra))
    return objects


def read_bbgt(path: PathLike) -> List[BBGTObject]:
    """Read one bbGt annotation file; a missing file is an error naming it."""
    return parse_bbgt(_decode(_read_bytes(path), path), os.fspath(path))


def objects_to_arrays(objects: Sequence[BBGTObject]) -> BBGTArrays:
    """Column view of parsed objects (empty files give arrays of length 0 with the right shape)."""
    if not objects:
        return BBGTArrays(
            np.zeros(0, dtype=str),
            np.zeros((0, 4)),
            np.zeros(0, dtype=np.int64),
            np.zeros((0, 4)),
            np.zeros(0, dtype=bool),
            np.zeros(0),
        )
    table = np.array([o[1:] for o in objects], dtype=np.float64)
    return BBGTArrays(
        labels=np.array([o.label for o in objects]),
        boxes=table[:, 0:4].copy(),
        occlusion=table[:, 4].astype(np.int64),
        visible=table[:, 5:9].copy(),
        ignore=table[:, 9] != 0,
        angle=table[:, 10].copy(),
    )


def read_bbgt_arrays(path: PathLike) -> BBGTArrays:
    """Read one bbGt file straight into column arrays."""
    return objects_to_arrays(read_bbgt(path))


def _read_bytes(path: PathLike) -> bytes:
    # os.open/os.read: a third of the cost of open().read() on thousands of tiny files.
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise FileNotFoundError(f"bbGt annotation file not found: {os.fspath(path)}") from None
    try:
        chunks = [os.read(fd, 1 << 16)]
        while len(chunks[-1]) == 1 << 16:
            chunks.append(os.read(fd, 1 << 16))
    finally:
        os.close(fd)
    return b"".join(chunks)


def _decode(data: bytes, path: PathLike) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BBGTFormatError(
            f"{os.fspath(path)}: not a UTF-8 text file (byte {e.start}): not a bbGt annotation"
        ) from None


def _fast_path_valid(table: np.ndarray) -> bool:
    """Whether vectorised rows pass :func:`parse_bbgt`'s checks (else it reads them, naming the line)."""
    occlusion = table[:, 4]
    return bool(
        np.isfinite(table).all()
        and (table[:, 2:4] >= 0).all()
        and (occlusion == np.floor(occlusion)).all()
        and ((occlusion >= 0) & (occlusion < 2**31)).all()
    )


def read_bbgt_many(paths: Sequence[PathLike]) -> Tuple[np.ndarray, BBGTArrays]:
    """Read many bbGt files at once: (index of each object's file in ``paths``, objects).

    Evaluation reads thousands of small files, so the common case (version 3, well formed)
    is parsed in one vectorised pass; any other file goes through :func:`parse_bbgt`, which
    reads every version and names the file and line of any error.
    """
    header = _HEADER.encode() + b"3"
    labels: List[bytes] = []
    numbers: List[bytes] = []
    counts = np.zeros(len(paths), dtype=np.int64)
    slow: List[Tuple[int, BBGTArrays]] = []
    for i, path in enumerate(paths):
        data = _read_bytes(path)
        text = _decode(data, path)  # labels are decoded below: refuse a binary file by name here
        head, _, body = data.partition(b"\n")
        rows = [line.split(None, 1) for line in body.splitlines() if line.strip()]
        if head.strip() != header or any(len(r) != 2 or r[1].count(b" ") != 10 for r in rows):
            slow.append((i, objects_to_arrays(parse_bbgt(text, os.fspath(path)))))
            continue
        counts[i] = len(rows)
        labels += [r[0] for r in rows]
        numbers += [r[1] for r in rows]
    with warnings.catch_warnings():  # a non-numeric token ends the parse early: checked below
        warnings.simplefilter("ignore", DeprecationWarning)
        table = np.fromstring(b" ".join(numbers), dtype=np.float64, sep=" ")
    if table.size != 11 * len(numbers) or not _fast_path_valid(table.reshape(-1, 11)):
        # Read those files strictly: the parser names the offending line (or reads a number
        # that numpy could not).
        for i in np.flatnonzero(counts):
            slow.append(
                (i, objects_to_arrays(parse_bbgt(_decode(_read_bytes(paths[i]), paths[i]), os.fspath(paths[i]))))
            )
        counts[:] = 0
        labels, table = [], np.zeros(0)
    table = table.reshape(-1, 11)
    frame = np.repeat(np.arange(len(paths)), counts)
    arrays = BBGTArrays(
        labels=np.array([b.decode("utf-8") for b in labels], dtype=str) if labels else np.zeros(0, dtype=str),
        boxes=table[:, 0:4],
        occlusion=table[:, 4].astype(np.int64),
        visible=table[:, 5:9],
        ignore=table[:, 9] != 0,
        angle=table[:, 10],
    )
    if slow:  # splice the files read one by one back into file order
        parts = [arrays] + [a for _, a in slow]
        frame = np.concatenate([frame] + [np.full(len(a), i) for i, a in slow])
        arrays = BBGTArrays(*(np.concatenate([getattr(a, f) for a in parts]) for f in BBGTArrays._fields))
        order = np.argsort(frame, kind="stable")
        frame, arrays = frame[order], BBGTArrays(*(v[order] for v in arrays))
    return frame, arrays
