"""detpre's config keys, added to a Detectron2 ``CfgNode`` by :func:`add_detpre_config`.

Keys live where a Detectron2 user would look for them (``SOLVER.SCHEDULE`` next to the
solver, ``MODEL.RESNETS`` next to the backbone) so that configs read like Detectron2's own.
"""
from detectron2.config import CfgNode as CN


def add_detpre_config(cfg: CN) -> None:
    """Add detpre's keys, with their defaults, to ``cfg`` in place."""
    _C = cfg

    # ---------------------------------------------------------------- schedules
    # "kx" schedules of *Rethinking ImageNet Pre-training*: 1x is ITERS_PER_X iterations at
    # REFERENCE_IMS_PER_BATCH images; the LR drops by SOLVER.GAMMA at the last
    # STEPS_FROM_END[0] and STEPS_FROM_END[1] iterations. For another SOLVER.IMS_PER_BATCH,
    # iterations scale by REFERENCE_IMS_PER_BATCH / IMS_PER_BATCH and the LR by the inverse.
    # The values below are all *at the reference batch*, so resolving is idempotent: the
    # resolved config can be saved, reloaded and resolved again without drifting.
    _C.SOLVER.SCHEDULE = CN()
    # "" leaves SOLVER.* as written; otherwise "1x", "6x", "0.5x", "2.5x", ...
    _C.SOLVER.SCHEDULE.NAME = ""
    # Length of a 1x schedule, in iterations at the reference batch (the paper's 90k).
    _C.SOLVER.SCHEDULE.ITERS_PER_X = 90000
    # The LR drops at the last 60k and the last 20k iterations, whatever the length.
    _C.SOLVER.SCHEDULE.STEPS_FROM_END = (60000, 20000)
    # The batch size at which every value in this node is given.
    _C.SOLVER.SCHEDULE.REFERENCE_IMS_PER_BATCH = 16
    # SOLVER.BASE_LR at the reference batch (scaled linearly with the batch).
    _C.SOLVER.SCHEDULE.BASE_LR = 0.02
    # Warm-up, checkpoint and evaluation periods at the reference batch: they are kept
    # constant in images seen, so curves of runs with different batches line up.
    _C.SOLVER.SCHEDULE.WARMUP_ITERS = 1000
    _C.SOLVER.SCHEDULE.CHECKPOINT_PERIOD = 5000
    # 0 disables periodic evaluation (only the final one runs).
    _C.SOLVER.SCHEDULE.EVAL_PERIOD = 0

    # ------------------------------------------------------- from-scratch backbone
    # Zero-init the gamma of the last norm layer of every residual block, so each block
    # starts as the identity (Goyal et al.); helps the first iterations from scratch.
    _C.MODEL.RESNETS.ZERO_INIT_LAST_NORM = False

    # ---------------------------------------------------------- cascade switching
    # When a checkpoint of a single-head (e.g. Mask R-CNN) model is loaded into a cascade
    # model, seed every cascade stage's box head and predictor from the single head, as in
    # *Rethinking ImageNet Pre-training*'s switch to Cascade R-CNN late in a schedule.
    _C.MODEL.ROI_BOX_CASCADE_HEAD.SEED_FROM_SINGLE_HEAD = True

    # ------------------------------------------------------------------ data
    # Which registered dataset mapper builds training batches (see
    # detpre.data.dataset_mappers.MAPPER_REGISTRY); "" is Detectron2's DatasetMapper.
    _C.INPUT.DATASET_MAPPER_NAME = ""
    # Use detpre's resumable training loader: batches are a function of (SEED, rank,
    # iteration), so --resume continues the same data stream. Off: Detectron2's loader.
    _C.DATALOADER.RESUMABLE = True
