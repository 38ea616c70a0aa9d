#!/usr/bin/env python
"""Train or evaluate a detector with detpre's components through Detectron2's launcher.

    python tools/train_net.py --config-file configs/Demo/faster_rcnn_R18_FPN_scratch.yaml MODEL.DEVICE cpu
    python tools/train_net.py --config-file CFG --schedule 6x SOLVER.IMS_PER_BATCH 64 --num-gpus 8
    python tools/train_net.py --config-file CFG --dry-run      # print the resolved config
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth TEST.AUG.ENABLED True

With ``TEST.AUG.ENABLED`` every evaluation (``--eval-only``, periodic, final) also runs with
Detectron2's test-time augmentation; its results are the plain ones' names plus "_TTA".
See ``detpre.engine.train_net``.
"""

import sys

from detpre.engine.train_net import main

if __name__ == "__main__":
    sys.exit(main())
