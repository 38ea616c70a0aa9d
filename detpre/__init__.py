"""detpre: how should a detector's weights start? A Detectron2 extension.

Importing the package registers every detpre component with Detectron2's registries
(backbones, ROI heads, datasets), the way Detectron2's own ``projects/`` do.
"""

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without Detectron2
    raise ImportError(
        "detpre needs Detectron2, which is not installed in this environment.\n"
        "  CPU / quick start: `make install` (a Python 3.10 venv with torch==2.3.1, "
        "torchvision==0.18.1 and sal-detectron2==0.7.2, Detectron2's code with compiled ops).\n"
        "  GPU clusters: install your own torch, build Detectron2 from source "
        "(`python -m pip install -e <detectron2 checkout>`), then `pip install -e .` here."
    ) from e

from . import data, modeling  # noqa: F401  (registers datasets, backbones, heads)
from .config import add_detpre_config

__all__ = ["add_detpre_config"]
__version__ = "0.1.0"
