"""Detection result files: the toolbox's text format and COCO-style JSON.

Text, as ``kaist_eval_full.m`` aggregates it and ``bbGt>loadAll`` reads it: one detection
a line, ``frame,x,y,w,h,score``, with ``frame`` the position of the frame in the image set
and x, y the top-left corner in pixels (commas or blanks; ``%``/``#`` comment lines allowed,
as MATLAB's ``load -ascii`` does). JSON: a list of
``{"image_id": <position>, "bbox": [x, y, w, h], "score": s}`` (extra keys such as
``category_id`` are ignored). Both are converted to 0-based frame positions once, here.

Nothing in either file says where its frame numbers start. The default is the convention of
the published evaluators, :data:`DEFAULT_BASES`: text 1-based (MATLAB's ``kaist_eval_full.m``
writes ``frame`` from 1), JSON 0-based (MLPD's ``evaluation_script.py`` reads ``image_id`` as
the 0-based id of ``KAIST_annotation.json``, and subtracts 1 from the frame of text files).
A file numbered the other way shifts every detection onto the next frame; the CLI states the
base it used and warns when the other one would fit the file much better.
"""

from __future__ import annotations

import io
import json
from typing import Callable, NamedTuple, Optional

import numpy as np

from .files import atomic_write

__all__ = [
    "DEFAULT_BASES",
    "Detections",
    "DetectionFormatError",
    "read_detections",
    "parse_detections",
    "read_result_text",
    "sniff_format",
    "format_detections",
    "write_detections",
]


#: The first frame's number in each format, by the published evaluators' conventions.
DEFAULT_BASES = {"txt": 1, "json": 0}


class DetectionFormatError(ValueError):
    """A result file cannot be read; the message names the file and line (or entry)."""


class Detections(NamedTuple):
    frame: np.ndarray  # (N,) int64, 0-based position in the image set
    boxes: np.ndarray  # (N, 4) float64 x y w h
    scores: np.ndarray  # (N,) float64

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros(0, dtype=np.int64), np.zeros((0, 4)), np.zeros(0))

    def tied_pairs(self) -> int:
        """Pairs of detections of one frame with exactly the same score.

        ``bbGt>evalRes`` matches a frame's detections in descending score order with a stable
        sort, so the order of such a pair is the file's line order: where both could take the
        same person, the one listed first does, and a shuffled file can give another MR. The
        MATLAB toolbox behaves so and kaisteval copies it; this count says whether a file is
        exposed. (Equal scores in different frames are pooled in image-set order, whatever
        the file order.)
        """
        if not len(self):
            return 0
        order = np.lexsort((self.scores, self.frame))
        frame, score = self.frame[order], self.scores[order]
        starts = np.flatnonzero(np.r_[True, (frame[1:] != frame[:-1]) | (score[1:] != score[:-1])])
        runs = np.diff(np.r_[starts, len(order)])
        return int((runs * (runs - 1) // 2).sum())


def _check(
    frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, n_frames: int, where: Callable[[int], str], base: int
) -> Detections:
    """Validate parsed columns; ``where(i)`` names row i's file and line (or entry)."""
    problems = (
        (~np.isfinite(frame) | (frame != np.round(frame)), "frame index is not an integer"),
        (
            (frame < base) | (frame >= n_frames + base),
            f"frame index out of range {base}..{n_frames - 1 + base} (the image set has {n_frames} frames)",
        ),
        (~np.isfinite(boxes).all(axis=1) | ~np.isfinite(scores), "box or score is not finite"),
        ((boxes[:, 2] < 0) | (boxes[:, 3] < 0), "negative box width or height"),
    )
    for bad, message in problems:
        if bad.any():
            i = int(np.argmax(bad))
            raise DetectionFormatError(f"{where(i)}: {message} (frame index {frame[i]:g})")
    return Detections(frame.astype(np.int64) - base, boxes, scores)


def _read_text(path: str, text: str, n_frames: int, base: int) -> Detections:
    lines = text.replace(",", " ").splitlines()
    numbers = [(i, line.split()) for i, line in enumerate(lines, start=1)]
    numbers = [(i, f) for i, f in numbers if f and f[0][0] not in "%#"]
    if not numbers:
        return Detections.empty()
    lineno = np.fromiter((i for i, _ in numbers), dtype=np.int64, count=len(numbers))
    rows = []
    for i, fields in numbers:
        try:
            if len(fields) != 6:
                raise ValueError
            rows.append([float(v) for v in fields])
        except ValueError:
            raise DetectionFormatError(
                f"{path}:{i}: expected 6 numbers 'frame,x,y,w,h,score', got {lines[i - 1].strip()!r}"
            ) from None
    table = np.array(rows, dtype=np.float64)
    return _check(table[:, 0], table[:, 1:5], table[:, 5], n_frames, lambda i: f"{path}:{lineno[i]}", base)


def _read_json(path: str, text: str, n_frames: int, base: int) -> Detections:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise DetectionFormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(entries, list):
        raise DetectionFormatError(f"{path}: expected a JSON list of detections, got {type(entries).__name__}")
    if not entries:
        return Detections.empty()
    try:
        table = np.array([(e["image_id"], *e["bbox"], e["score"]) for e in entries], dtype=np.float64).reshape(
            len(entries), -1
        )
        if table.shape[1] != 6:
            raise ValueError
    except (KeyError, TypeError, ValueError, OverflowError):
        for k, e in enumerate(entries):
            try:
                values = [e["image_id"], e["score"], *e["bbox"]]
                ok = len(e["bbox"]) == 4 and all(isinstance(v, (int, float)) for v in values)
                [float(v) for v in values]  # an integer too large for a float overflows
            except (KeyError, TypeError, OverflowError):
                ok = False
            if not ok:
                raise DetectionFormatError(
                    f"{path}: entry {k}: expected {{'image_id': int, 'bbox': [x, y, w, h], 'score': float}}, got {e!r}"
                ) from None
        raise  # pragma: no cover
    return _check(table[:, 0], table[:, 1:5], table[:, 5], n_frames, lambda i: f"{path}: entry {i}", base)


def read_detections(path: str, n_frames: int, fmt: Optional[str] = None, base: Optional[int] = None) -> Detections:
    """Read a result file (``fmt`` "txt" or "json"; by default sniffed from the content) whose
    first frame is numbered ``base`` (by default the format's :data:`DEFAULT_BASES`)."""
    return parse_detections(read_result_text(path), path, n_frames, fmt, base)


def read_result_text(path: str) -> str:
    """The content of a result file, with errors that name it."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"detection file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise DetectionFormatError(f"{path}: not a UTF-8 text file (byte {e.start})") from None


def sniff_format(text: str) -> str:
    """ "json" for a JSON list or object, else "txt"."""
    return "json" if text.lstrip()[:1] in ("[", "{") else "txt"


def parse_detections(
    text: str, path: str, n_frames: int, fmt: Optional[str] = None, base: Optional[int] = None
) -> Detections:
    """Parse the content of a result file; ``path`` names it in error messages."""
    fmt = fmt or sniff_format(text)
    if fmt not in DEFAULT_BASES:
        raise ValueError(f"unknown detection format {fmt!r}; expected 'txt' or 'json'")
    base = DEFAULT_BASES[fmt] if base is None else base
    if base not in (0, 1):
        raise ValueError(f"frame base {base!r} must be 0 or 1")
    return (_read_json if fmt == "json" else _read_text)(path, text, n_frames, base)


def format_detections(detections: Detections) -> str:
    """The toolbox's text format, as ``kaist_eval_full.m`` writes it: 1-based frames,
    ``%d,%.4f,%.4f,%.4f,%.4f,%.8f``."""
    d = detections
    table = np.column_stack([d.frame + 1, d.boxes, d.scores]) if len(d) else np.zeros((0, 6))
    buffer = io.StringIO()
    np.savetxt(buffer, table, fmt=["%d", "%.4f", "%.4f", "%.4f", "%.4f", "%.8f"], delimiter=",")
    return buffer.getvalue()


def write_detections(path: str, detections: Detections) -> None:
    """Write a result file in the toolbox's text format (atomically: :func:`~kaisteval.files.atomic_write`)."""
    with atomic_write(path, "w") as f:
        f.write(format_detections(detections))
