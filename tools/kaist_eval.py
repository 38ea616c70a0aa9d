#!/usr/bin/env python
"""KAIST log-average miss rate of detection result files, as the MATLAB toolbox computes it.

    python tools/kaist_eval.py --annotations ../shared/data/kaist-annotations-test-improved \
        --image-set ../shared/data/kaist-imagesets/test-all-20.txt \
        --detections results.txt [more.json ...] [--names A B] [--json] [--plot curves.png]

Prints the MR of every setting of ``kaist_eval_full.m`` in percent (MR_all, MR_day,
MR_night, the scale and the occlusion settings) and the number of equally scored detection
pairs within a frame (``--json``: also recall, counts and the miss rate at each FPPI point).
Pure numpy (see ``kaisteval``): no torch or Detectron2 import.
"""

import os
import sys

try:
    import kaisteval  # noqa: F401
except ImportError:  # a checkout where the package is not installed yet
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kaisteval.cli import main

if __name__ == "__main__":
    sys.exit(main())
