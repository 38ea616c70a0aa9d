"""KAIST / Caltech pedestrian log-average miss rate, as the MATLAB toolbox computes it.

Pure Python + numpy on purpose: ``tools/kaist_eval.py`` must start and finish in well under a
second, so nothing here imports torch, Detectron2 or detpre (``detpre.evaluation.
KAISTEvaluator`` wraps it for Detectron2). Modules: ``bbgt`` (annotation files), ``frames``
(image sets, day/night), ``detections`` (result files), ``protocol`` (settings and
ground-truth filtering), ``matching`` (evalRes/compRoc), ``evaluate``, ``plot``, ``cli``, and
what detpre shares with it as the bottom layer: ``files`` (atomic writes) and ``figures`` (the
figure policy; matplotlib, imported only when plotting).
"""

from .bbgt import (  # noqa: F401
    BBGTArrays,
    BBGTFormatError,
    BBGTObject,
    parse_bbgt,
    read_bbgt,
    read_bbgt_arrays,
    read_bbgt_many,
)
from .detections import DetectionFormatError, Detections, read_detections, write_detections  # noqa: F401
from .evaluate import SettingResult, evaluate, load_ground_truth, summary  # noqa: F401
from .frames import Frame, read_image_set  # noqa: F401
from .protocol import REF_FPPI, SETTINGS, GroundTruth, Setting  # noqa: F401
