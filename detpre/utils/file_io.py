"""detpre's file writes: :func:`atomic_write` and :class:`WriteError`, and images on top of them.

The atomic writer is kaisteval's (:mod:`kaisteval.files`, the bottom layer, so that the
numpy-only evaluator writes its files the same way); it is re-exported here so that detpre's
code has one place to import its writes from. What needs OpenCV, encoding an image, is here.
"""

import os

import cv2
import numpy as np

from kaisteval.files import WriteError, atomic_write

__all__ = ["WriteError", "atomic_write", "write_image"]


def write_image(path: str, image: np.ndarray) -> None:
    """Encode ``image`` (BGR or grey) by ``path``'s extension and write it atomically.

    ``cv2.imwrite`` reports a failed write by returning False, which callers forget; here an
    encoding failure is a ``ValueError`` and a failed write a :class:`WriteError`.
    """
    extension = os.path.splitext(path)[1] or ".png"
    ok, encoded = cv2.imencode(extension, image)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as {extension} for {path}")
    with atomic_write(path, "wb") as f:
        f.write(encoded.tobytes())
