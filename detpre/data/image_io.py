"""Reading an image file whole, or failing with its name.

``cv2.imread`` returns None for a missing file, and for a JPEG cut short (a copy interrupted,
a full disk while extracting a dataset) it returns a frame whose lower part is grey: libjpeg
prints "Premature end of JPEG file" to stderr without the file's name and OpenCV carries on.
A detector trained on such frames learns from grey; nobody is told which file it was. So
every image detpre reads (both mappers, the proposal tool, the visualiser, ``check_kaist``)
comes through :func:`read_image`, which checks the encoded stream is complete before it
decodes it: a JPEG must end with its End-Of-Image marker, a PNG with its ``IEND`` chunk.
"""

import cv2
import numpy as np

__all__ = ["ImageReadError", "read_image", "truncation"]

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
# Bytes at the end of a file searched for the end marker: encoders may pad a few bytes after
# it. Inside a JPEG's entropy-coded data 0xFF is always followed by 0x00 or a restart
# marker, so 0xFFD9 there can only be the true end.
_TAIL = 64


class ImageReadError(ValueError):
    """An image file that is missing, unreadable or incomplete; the message names the file."""


def truncation(data: bytes) -> str:
    """Why the encoded image ``data`` is incomplete, or "" when it is whole (or not JPEG/PNG)."""
    tail = data[-_TAIL:]
    if data.startswith(_JPEG_START) and _JPEG_END not in tail:
        return "truncated JPEG (no End-Of-Image marker)"
    if data.startswith(_PNG_START) and _PNG_END not in tail:
        return "truncated PNG (no IEND chunk)"
    return ""


def read_image(path: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode ``path`` with OpenCV (``flags`` as ``cv2.imread``), whole or not at all.

    Raises ``FileNotFoundError`` for a missing file and :class:`ImageReadError` for one that
    is unreadable, empty, not an image or truncated, each naming the file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"Cannot read image {path}: no such file.") from None
    except OSError as e:
        raise ImageReadError(f"Cannot read image {path}: {e.strerror or e}.") from None
    if not data:
        raise ImageReadError(f"Cannot read image {path}: the file is empty.")
    problem = truncation(data)
    if problem:
        raise ImageReadError(f"Cannot read image {path}: {problem}, {len(data)} bytes.")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise ImageReadError(f"Cannot read image {path}: not an image OpenCV can decode.")
    return image
