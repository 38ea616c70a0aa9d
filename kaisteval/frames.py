"""KAIST frame names, image sets, the day/night split and where a frame's annotation lives.

A frame is named ``setXX/VYYY/IZZZZZ``. Day and night are a property of the *set* (the
benchmark recorded sets 00-02 and 06-08 by day, 03-05 and 09-11 by night; Hwang et al.,
CVPR 2015), so the split is computed from the name of every frame and works for any image
set or subset, not from a hard-coded frame count.
"""

from __future__ import annotations

import os
import re
from typing import List, NamedTuple, Sequence

import numpy as np

__all__ = ["Frame", "DAY_SETS", "parse_frame", "read_image_set", "day_mask", "AnnotationLayout"]

#: Sets recorded by day (train: 00-02, test: 06-08); the others were recorded at night.
DAY_SETS = frozenset({0, 1, 2, 6, 7, 8})

# "set06/V000/I00019", the flat "set06_V000_I00019" of the improved annotations, with an
# optional extension ("...I00019.txt", ".jpg").
_FRAME_RE = re.compile(r"set(\d{2})[/_]V(\d{3})[/_]I(\d{5})(?:\.\w+)?")


class Frame(NamedTuple):
    set_id: int
    video_id: int
    frame_id: int

    @property
    def name(self) -> str:
        return f"set{self.set_id:02d}/V{self.video_id:03d}/I{self.frame_id:05d}"

    @property
    def day(self) -> bool:
        return self.set_id in DAY_SETS


def parse_frame(text: str) -> Frame:
    """``setXX/VYYY/IZZZZZ`` (or ``setXX_VYYY_IZZZZZ``) -> Frame; ValueError otherwise."""
    match = _FRAME_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a KAIST frame name 'setXX/VYYY/IZZZZZ', got {text.strip()!r}")
    return Frame(*(int(g) for g in match.groups()))


def read_image_set(path: str) -> List[Frame]:
    """The frames of an image-set file, in order (the order defines 1-based frame indices)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"image-set file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file (byte {e.start}): not an image set") from None
    frames = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            frames.append(parse_frame(line))
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
    if not frames:
        raise ValueError(f"{path}: the image set lists no frame")
    return frames


def day_mask(frames: Sequence[Frame]) -> np.ndarray:
    """Boolean mask of the frames recorded by day."""
    return np.fromiter((f.set_id in DAY_SETS for f in frames), dtype=bool, count=len(frames))


class AnnotationLayout:
    """Finds a frame's bbGt file in either published layout of a KAIST annotation directory.

    The improved test annotations (Liu et al., BMVC 2016) are published flat,
    ``DIR/setXX_VYYY_IZZZZZ.txt``; the official release nests them,
    ``DIR/setXX/VYYY/IZZZZZ.txt``. The layout is detected once, from the first frame.
    """

    def __init__(self, root: str, probe: Frame):
        self.root = root
        if not os.path.isdir(root):
            raise FileNotFoundError(f"annotation directory not found: {root}")
        flat, tree = self._flat(probe), self._tree(probe)
        if os.path.isfile(flat):
            self.flat = True
        elif os.path.isfile(tree):
            self.flat = False
        else:
            raise FileNotFoundError(f"no annotation for frame {probe.name} in {root}: tried {flat} and {tree}")

    def _flat(self, f: Frame) -> str:
        return os.path.join(self.root, f"set{f.set_id:02d}_V{f.video_id:03d}_I{f.frame_id:05d}.txt")

    def _tree(self, f: Frame) -> str:
        return os.path.join(self.root, f"set{f.set_id:02d}", f"V{f.video_id:03d}", f"I{f.frame_id:05d}.txt")

    def path(self, frame: Frame) -> str:
        return self._flat(frame) if self.flat else self._tree(frame)
