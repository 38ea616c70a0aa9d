"""KAIST frames: their names, image sets, the day/night split and where a frame's files live.

The one owner of the KAIST frame model, used by the evaluator CLI and by detpre's dataset
loader, evaluator, checks and tools alike.

* A frame is named ``setXX/VYYY/IZZZZZ``; the improved test annotations name their files
  ``setXX_VYYY_IZZZZZ`` (:func:`parse_frame` reads both, with an optional extension).
* Day and night are a property of the *set* (the benchmark recorded sets 00-02 and 06-08 by
  day, 03-05 and 09-11 by night; Hwang et al., CVPR 2015), so the split is computed from the
  name of every frame and works for any image set or subset.
* Files: images are ``images/setXX/VYYY/{visible,lwir}/IZZZZZ.jpg`` under a KAIST root, every
  frame ``FRAME_SIZE``; annotations come in the layouts of :data:`LAYOUTS` (the official tree,
  the paired tree with one file per modality, the XML tree of the sanitized annotations, the
  flat files of the improved ones).
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "DAY_SETS",
    "FRAME_SIZE",
    "LAYOUTS",
    "MODALITIES",
    "AnnotationLayout",
    "Frame",
    "annotation_file",
    "day_mask",
    "image_file",
    "parse_frame",
    "parse_frame_path",
    "read_image_set",
]

#: Sets recorded by day (train: 00-02, test: 06-08); the others were recorded at night.
DAY_SETS = frozenset({0, 1, 2, 6, 7, 8})
#: (width, height) of every KAIST frame, both modalities.
FRAME_SIZE = (640, 512)
#: The two cameras, as the image folders name them.
MODALITIES = ("visible", "lwir")

# The grammar of a frame's name: set, video and frame numbers, "/" or "_" between them.
_SET, _VIDEO, _FRAME = r"set(\d{2})", r"V(\d{3})", r"I(\d{5})"
_FRAME_RE = re.compile(rf"{_SET}[/_]{_VIDEO}[/_]{_FRAME}(?:\.\w+)?")
_MODALITY = "(" + "|".join(MODALITIES) + ")"


class Frame(NamedTuple):
    set_id: int
    video_id: int
    frame_id: int

    @property
    def set_name(self) -> str:
        return f"set{self.set_id:02d}"

    @property
    def video_name(self) -> str:
        return f"V{self.video_id:03d}"

    @property
    def frame_name(self) -> str:
        return f"I{self.frame_id:05d}"

    @property
    def name(self) -> str:
        """``setXX/VYYY/IZZZZZ``, as image sets list it."""
        return f"{self.set_name}/{self.video_name}/{self.frame_name}"

    @property
    def flat_name(self) -> str:
        """``setXX_VYYY_IZZZZZ``, as the flat annotation files are named."""
        return f"{self.set_name}_{self.video_name}_{self.frame_name}"

    @property
    def day(self) -> bool:
        return self.set_id in DAY_SETS


def parse_frame(text: str) -> Frame:
    """``setXX/VYYY/IZZZZZ`` (or ``setXX_VYYY_IZZZZZ``, either with an extension) -> Frame."""
    match = _FRAME_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a KAIST frame name 'setXX/VYYY/IZZZZZ', got {text.strip()!r}")
    return Frame(*(int(g) for g in match.groups()))


def read_image_set(path: str) -> List[Frame]:
    """The frames of an image-set file, in order (the order defines 1-based frame indices).

    Lines name frames in either form; blank lines are skipped; a set that lists no frame is
    an error, as is any other line (naming the file and line).
    """
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


def image_file(image_root: str, frame: Frame, modality: str) -> str:
    """``image_root/setXX/VYYY/<modality>/IZZZZZ.jpg``."""
    return os.path.join(image_root, frame.set_name, frame.video_name, modality, f"{frame.frame_name}.jpg")


class _Layout(NamedTuple):
    relative: str  # format of a frame's file under the annotation directory
    pattern: "re.Pattern[str]"  # the same, read back from a relative path
    per_modality: bool


#: Annotation layouts, by name: where a frame's file(s) live under an annotation directory.
LAYOUTS: Dict[str, _Layout] = {
    "tree": _Layout("{set}/{video}/{frame}.txt", re.compile(rf"^{_SET}/{_VIDEO}/{_FRAME}\.txt$"), False),
    "flat": _Layout("{set}_{video}_{frame}.txt", re.compile(rf"^{_SET}_{_VIDEO}_{_FRAME}\.txt$"), False),
    "paired": _Layout(
        "{set}/{video}/{modality}/{frame}.txt", re.compile(rf"^{_SET}/{_VIDEO}/{_MODALITY}/{_FRAME}\.txt$"), True
    ),
    "xml": _Layout("{set}/{video}/{frame}.xml", re.compile(rf"^{_SET}/{_VIDEO}/{_FRAME}\.xml$"), False),
}
_IMAGE_PATTERN = re.compile(rf"^{_SET}/{_VIDEO}/{_MODALITY}/{_FRAME}\.jpg$")


def annotation_file(directory: str, frame: Frame, layout: str, modality: Optional[str] = None) -> str:
    """The file of ``frame`` (in ``modality`` for the paired layout) under ``directory``."""
    spec = LAYOUTS[layout]
    if spec.per_modality != (modality is not None):
        raise ValueError(f"annotation layout {layout!r} {'needs' if spec.per_modality else 'takes no'} a modality")
    parts = dict(set=frame.set_name, video=frame.video_name, frame=frame.frame_name, modality=modality)
    return os.path.join(directory, *spec.relative.format(**parts).split("/"))


def parse_frame_path(relative: str, layout: str = "images") -> Optional[Frame]:
    """The frame of a path relative to an annotation directory in ``layout`` (or to
    ``images/`` with ``layout="images"``), None if the path is not one of that layout's."""
    pattern = _IMAGE_PATTERN if layout == "images" else LAYOUTS[layout].pattern
    match = pattern.match(relative.replace(os.sep, "/"))
    if match is None:
        return None
    numbers = [g for g in match.groups() if g not in MODALITIES]
    return Frame(*(int(g) for g in numbers))


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
        tried = {name: annotation_file(root, probe, name) for name in ("flat", "tree")}
        found = [name for name, path in tried.items() if os.path.isfile(path)]
        if not found:
            raise FileNotFoundError(
                f"no annotation for frame {probe.name} in {root}: tried {tried['flat']} and {tried['tree']}"
            )
        self.layout = found[0]

    def path(self, frame: Frame) -> str:
        return annotation_file(self.root, frame, self.layout)
