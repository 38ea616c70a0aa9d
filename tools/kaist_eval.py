#!/usr/bin/env python
"""KAIST log-average miss rate of detection result files, as the MATLAB toolbox computes it.

    python tools/kaist_eval.py --annotations ../shared/data/kaist-annotations-test-improved \
        --image-set ../shared/data/kaist-imagesets/test-all-20.txt \
        --detections results.txt [more.json ...] [--names A B] [--json] [--plot curves.png]

Prints MR_all / MR_day / MR_night in percent (``--json``: every setting of
``kaist_eval_full.m``). Pure numpy (see ``kaisteval``): no torch or Detectron2 import.
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
