"""detpre's config keys, added to a Detectron2 ``CfgNode`` by :func:`add_detpre_config`.

Keys live where a Detectron2 user would look for them (``SOLVER.SCHEDULE`` next to the
solver, ``MODEL.RESNETS`` next to the backbone) so that configs read like Detectron2's own.
One ``add_*_config`` per feature, as Detectron2's projects do; :func:`add_detpre_config`
adds them all.
"""

from detectron2.config import CfgNode as CN


def add_detpre_config(cfg: CN) -> None:
    """Add every detpre key, with its default, to ``cfg`` in place."""
    for add in (
        add_schedule_config,
        add_scratch_config,
        add_data_config,
        add_kaist_config,
        add_box_domain_config,
        add_image_domain_config,
        add_speed_config,
        add_evaluation_config,
        add_logging_config,
    ):
        add(cfg)


def add_schedule_config(cfg: CN) -> None:
    """``SOLVER.SCHEDULE``: the "kx" schedules (:mod:`detpre.solver.schedule`)."""
    _C = cfg
    # "kx" schedules of *Rethinking ImageNet Pre-training*: 1x is ITERS_PER_X iterations at
    # REFERENCE_IMS_PER_BATCH images; the LR drops by SOLVER.GAMMA at the last
    # STEPS_FROM_END[0] and STEPS_FROM_END[1] iterations. For another SOLVER.IMS_PER_BATCH,
    # iterations scale by REFERENCE_IMS_PER_BATCH / IMS_PER_BATCH and the LR by the inverse.
    # The values below are all *at the reference batch*, so resolving is idempotent: the
    # resolved config can be saved, reloaded and resolved again without drifting.
    # A named schedule writes SOLVER.{MAX_ITER,STEPS,BASE_LR,WARMUP_ITERS,CHECKPOINT_PERIOD}
    # and TEST.EVAL_PERIOD over what the config files say, and under what the command line
    # says (detpre.config.loader): a config file that names a schedule and sets one of these
    # keys to another value than the schedule's is an error.
    _C.SOLVER.SCHEDULE = CN()
    # "" leaves SOLVER.* as written; otherwise "1x", "6x", "0.5x", "2.5x", ... (--schedule)
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


def add_scratch_config(cfg: CN) -> None:
    """Training from scratch: the backbone's init and the switch to Cascade R-CNN."""
    _C = cfg
    # Zero-init the gamma of the last norm layer of every residual block, so each block
    # starts as the identity (Goyal et al.); helps the first iterations from scratch.
    _C.MODEL.RESNETS.ZERO_INIT_LAST_NORM = False

    # ---------------------------------------------------------- cascade switching
    # When a checkpoint of a single-head (e.g. Mask R-CNN) model is loaded into a cascade
    # model, seed every cascade stage's box head and predictor from the single head, as in
    # *Rethinking ImageNet Pre-training*'s switch to Cascade R-CNN late in a schedule.
    _C.MODEL.ROI_BOX_CASCADE_HEAD.SEED_FROM_SINGLE_HEAD = True


def add_data_config(cfg: CN) -> None:
    """Which mapper builds training batches, and the resumable loader."""
    _C = cfg
    # Which registered dataset mapper builds training batches (see
    # detpre.data.dataset_mappers.MAPPER_REGISTRY); "" is Detectron2's DatasetMapper.
    _C.INPUT.DATASET_MAPPER_NAME = ""
    # Use detpre's resumable training loader: batches are a function of (SEED, rank,
    # iteration), so --resume continues the same data stream. Off: Detectron2's loader.
    _C.DATALOADER.RESUMABLE = True


def add_kaist_config(cfg: CN) -> None:
    """KAIST: visible + thermal input (``INPUT.KAIST``) and halfway fusion (``MODEL.FUSION``)."""
    _C = cfg
    # Read by the "MultispectralDatasetMapper" (INPUT.DATASET_MAPPER_NAME), whose
    # INPUT.FORMAT names the channels: "BGRT"/"RGBT" (3 + 1), "BGRTTT"/"RGBTTT" (3 + 3, the
    # thermal frame repeated), "TTT"/"T" (thermal only); MODEL.PIXEL_MEAN/STD give one value
    # per channel. Geometric augmentation (INPUT.MIN_SIZE_*, RANDOM_FLIP, CROP) is shared.
    _C.INPUT.KAIST = CN()
    # Which boxes of *paired* annotations supervise training: "visible", "lwir" (objects not
    # annotated in that modality are dropped), "union" (the box enclosing both) or "average"
    # (their mean). Annotations that are not paired have one box and ignore this key.
    _C.INPUT.KAIST.BOX_SOURCE = "union"
    # Per-modality photometric augmentation at training time, as (min, max) factors drawn
    # uniformly per image (Detectron2's RandomBrightness/Contrast/Saturation); (1.0, 1.0) is
    # off. The visible and the thermal frame draw independently.
    _C.INPUT.KAIST.VISIBLE_BRIGHTNESS = (1.0, 1.0)
    _C.INPUT.KAIST.VISIBLE_CONTRAST = (1.0, 1.0)
    _C.INPUT.KAIST.VISIBLE_SATURATION = (1.0, 1.0)
    _C.INPUT.KAIST.LWIR_BRIGHTNESS = (1.0, 1.0)
    _C.INPUT.KAIST.LWIR_CONTRAST = (1.0, 1.0)

    # Halfway fusion (backbone "build_halfway_fusion_resnet_fpn_backbone"): a visible and a
    # thermal ResNet stream up to FUSION.STAGE, concatenated and merged by a 1x1 conv there
    # (and at every earlier stage the FPN reads); later stages, FPN and heads are shared.
    _C.MODEL.FUSION = CN()
    # Last stage run separately per modality: "res2", "res3" (stride 8, as Liu et al.'s
    # fusion after VGG conv4), "res4" or "res5".
    _C.MODEL.FUSION.STAGE = "res3"
    # Initial weights of each stream (a Detectron2 .pkl/.pth of a ResNet or a whole detector,
    # e.g. ImageNet R-50), loaded when the backbone is built; a first conv with other input
    # channels is inflated/averaged (detpre.checkpoint). "" leaves the stream's own init;
    # MODEL.WEIGHTS, loaded afterwards, overrides both.
    _C.MODEL.FUSION.VISIBLE_WEIGHTS = ""
    _C.MODEL.FUSION.THERMAL_WEIGHTS = ""


def add_box_domain_config(cfg: CN) -> None:
    """Box-domain pre-training (AlignDet): ``MODEL.BOX_DOMAIN`` and ``INPUT.TWO_VIEW``.

    The defaults are AlignDet's released values (docs/aligndet.md compares every one with the
    official code); configs/AlignDet/pretrain/*.yaml set the per-detector ones.
    """
    _C = cfg
    # MODEL.META_ARCHITECTURE "BoxDomainPretrainer" wraps the detector named here as an
    # online detector plus a momentum (EMA) copy, trained on unsupervised proposals
    # (tools/precompute_proposals.py; MODEL.LOAD_PROPOSALS + DATASETS.PROPOSAL_FILES_TRAIN,
    # a Detectron2 .pkl or AlignDet's COCO .json) seen in two views ("TwoViewDatasetMapper").
    _C.MODEL.BOX_DOMAIN = CN()
    # The wrapped detector's meta-architecture: "GeneralizedRCNN" (standard or cascade ROI
    # heads) or "RetinaNet"; the rest of MODEL.* configures it as usual.
    _C.MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE = "GeneralizedRCNN"
    # Image-domain weights of the detector (ImageNet .pkl, a self-supervised or from-scratch
    # checkpoint, or a whole detector), loaded into it when it is built, before the momentum
    # copy is made. MODEL.WEIGHTS is for box-domain checkpoints of this meta-architecture.
    _C.MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS = ""
    # Keep the backbone's bottom-up network (the FPN's input; the whole backbone if it has
    # none) frozen and in eval mode, as AlignDet: only the parts outside it learn.
    _C.MODEL.BOX_DOMAIN.FREEZE_BACKBONE = True
    # EMA momentum of the momentum detector, raised from BASE to END on a half cosine over
    # SOLVER.MAX_ITER (BYOL, AlignDet); END == BASE keeps it constant.
    _C.MODEL.BOX_DOMAIN.BASE_MOMENTUM = 0.996
    _C.MODEL.BOX_DOMAIN.END_MOMENTUM = 1.0
    # Box embeddings (projection MLP that replaces the classifier) and their InfoNCE loss.
    _C.MODEL.BOX_DOMAIN.EMBED_DIM = 256
    _C.MODEL.BOX_DOMAIN.TEMPERATURE = 0.5
    _C.MODEL.BOX_DOMAIN.CONTRASTIVE_WEIGHT = 1.0
    # Weight of the class-agnostic regression of the ROI box head / one-stage head to the
    # assigned proposal (the RPN's own losses keep MODEL.RPN.LOSS_WEIGHT, as in Detectron2).
    _C.MODEL.BOX_DOMAIN.REGRESSION_WEIGHT = 1.0
    # The sampler of RoIs (two-stage, per cascade stage) or anchors (one-stage) per image, as
    # mmdet's RandomSampler(num, pos_fraction): up to int(SAMPLES_PER_IMAGE * POSITIVE_FRACTION)
    # random positives; with BACKGROUND_NEGATIVES, background boxes fill the rest up to
    # SAMPLES_PER_IMAGE and their embeddings are extra negatives of the contrastive loss
    # (never queries, never regressed). AlignDet: 4096 / 1.0 / no background (R-CNN),
    # 2048 / 1.0 / background (RetinaNet), 512 / 0.25 / background (HTC, multi-stage).
    _C.MODEL.BOX_DOMAIN.SAMPLES_PER_IMAGE = 4096
    _C.MODEL.BOX_DOMAIN.POSITIVE_FRACTION = 1.0
    _C.MODEL.BOX_DOMAIN.BACKGROUND_NEGATIVES = False
    # Multi-stage (cascade) heads: each stage's losses (regression and contrastive) are
    # multiplied by its weight (AlignDet's HTC: 1, 0.5, 0.25); a single-stage head uses the first.
    _C.MODEL.BOX_DOMAIN.STAGE_WEIGHTS = (1.0, 0.5, 0.25)
    # Cascade heads: refine the RoIs with each stage's regression before the next stage, as
    # Detectron2's CascadeROIHeads does. AlignDet's HTC (interleaved=True without masks) never
    # refines: every stage assigns the same RPN proposals at its own IoU.
    _C.MODEL.BOX_DOMAIN.REFINE_CASCADE_STAGES = False
    # Leave out of training the images without a proposal, as AlignDet's CocoDataset does
    # (filter_empty_gt); applies whenever MODEL.LOAD_PROPOSALS is on.
    _C.DATALOADER.FILTER_EMPTY_PROPOSALS = True

    # Two views of an image for box-domain pre-training ("TwoViewDatasetMapper"); each view
    # draws its own INPUT.MIN_SIZE_TRAIN / RANDOM_FLIP / CROP geometry.
    _C.INPUT.TWO_VIEW = CN()
    # Photometric augmentation per view: "aligndet" (one of nine RandAugment operations at a
    # random magnitude, AlignDet's), "byol" (colour jitter, grayscale, blur, solarize,
    # autocontrast, equalize chained) or "none".
    _C.INPUT.TWO_VIEW.PHOTOMETRIC = "aligndet"
    # A proposal is dropped from a view when less than this fraction of it is inside.
    _C.INPUT.TWO_VIEW.MIN_VISIBLE_FRACTION = 0.5
    # Only the first this many proposals of an image (in the file's order) are used, the same
    # in both views; 0 uses all. AlignDet: all for R-CNN, 50 for RetinaNet.
    _C.INPUT.TWO_VIEW.MAX_PROPOSALS = 0


def add_image_domain_config(cfg: CN) -> None:
    """Image-domain self-supervised pre-training: ``MODEL.IMAGE_DOMAIN`` and ``INPUT.IMAGE_DOMAIN``."""
    _C = cfg
    # MODEL.META_ARCHITECTURE "ImageDomainPretrainer" pre-trains the bottom-up network of the
    # backbone this config builds (MODEL.BACKBONE.NAME, MODEL.RESNETS.*; an FPN's bottom_up)
    # by contrasting two views of unlabeled images ("TwoCropDatasetMapper"), MoCo-style:
    # a query encoder trained by SGD, a key encoder that is its exponential moving average,
    # and queues of past keys as negatives. tools/convert_pretrained.py turns the checkpoint
    # into backbone weights for MODEL.WEIGHTS or MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS.
    # See docs/image_domain_ssl.md (fidelity to the official MoCo v2 / DenseCL code).
    _C.MODEL.IMAGE_DOMAIN = CN()
    # "moco_v2": one global embedding per view (average-pooled last stage, MLP head), InfoNCE
    # against a queue. "densecl": plus a dense embedding per location of the last stage
    # (1x1-conv head), matched across views by the most similar backbone feature, with its
    # own queue of pooled dense keys; the loss is (1 - DENSE_LOSS_WEIGHT) * global +
    # DENSE_LOSS_WEIGHT * dense.
    _C.MODEL.IMAGE_DOMAIN.METHOD = "moco_v2"
    # Paired visible + thermal data (a multispectral INPUT.FORMAT): the two views are the
    # visible and the thermal frame of one pair (CMC's cross-modal views), each seen alone
    # (early fusion: the other modality's channels are zero after normalisation; halfway
    # fusion: only that frame's stream runs). The loss is symmetric (visible queries against
    # thermal keys and the reverse, averaged), with one queue per modality. Read by the
    # mapper too.
    _C.MODEL.IMAGE_DOMAIN.CROSS_MODAL = False
    # Output width of the projection heads (MoCo v2: 128).
    _C.MODEL.IMAGE_DOMAIN.EMBED_DIM = 128
    # Hidden width of the projection heads (MoCo v2 / DenseCL: the last stage's width, 2048
    # for a ResNet-50; a ResNet-18's is 512).
    _C.MODEL.IMAGE_DOMAIN.HIDDEN_DIM = 2048
    # Keys kept as negatives, per queue (MoCo v2: 65536); a multiple of SOLVER.IMS_PER_BATCH.
    _C.MODEL.IMAGE_DOMAIN.QUEUE_SIZE = 65536
    # "random": the queues start as random unit vectors, negatives from the first step (MoCo
    # v2, DenseCL). "empty": only keys of past batches are negatives, the queue growing until
    # full. Random negatives reward mapping every image to one point far from them; BN's batch
    # centering forbids that, GN does not: a GN backbone from scratch collapsed so on the demo
    # data (docs/image_domain_ssl.md), hence "empty" in detpre's GN configs.
    _C.MODEL.IMAGE_DOMAIN.QUEUE_START = "random"
    # EMA momentum of the key encoder, constant (MoCo v2 / DenseCL: 0.999).
    _C.MODEL.IMAGE_DOMAIN.MOMENTUM = 0.999
    # InfoNCE temperature (MoCo v2 / DenseCL: 0.2).
    _C.MODEL.IMAGE_DOMAIN.TEMPERATURE = 0.2
    # DenseCL's lambda: the weight of the dense loss, the global one getting 1 - lambda
    # (DenseCL: 0.5). Unused by "moco_v2".
    _C.MODEL.IMAGE_DOMAIN.DENSE_LOSS_WEIGHT = 0.5

    # Two augmented square crops of an image ("TwoCropDatasetMapper"), MoCo v2's "aug+";
    # annotations are ignored. Each view draws its own crop, flip and photometric ops; the
    # frames of a multispectral pair share the view's crop and flip.
    _C.INPUT.IMAGE_DOMAIN = CN()
    # Side of the square crops, in pixels (MoCo v2: 224).
    _C.INPUT.IMAGE_DOMAIN.CROP_SIZE = 224
    # RandomResizedCrop: area fraction and aspect-ratio range of the crop (MoCo v2: (0.2, 1)
    # and torchvision's (3/4, 4/3)).
    _C.INPUT.IMAGE_DOMAIN.CROP_SCALE = (0.2, 1.0)
    _C.INPUT.IMAGE_DOMAIN.CROP_RATIO = (0.75, 1.3333333333333333)
    # ColorJitter brightness, contrast, saturation, hue, applied with probability
    # COLOR_JITTER_PROB (MoCo v2: (0.4, 0.4, 0.4, 0.1), 0.8). A thermal frame gets the
    # brightness and contrast jitter only: saturation and hue mean nothing on one channel.
    _C.INPUT.IMAGE_DOMAIN.COLOR_JITTER = (0.4, 0.4, 0.4, 0.1)
    _C.INPUT.IMAGE_DOMAIN.COLOR_JITTER_PROB = 0.8
    # RandomGrayscale of the visible frame (MoCo v2: 0.2); never applied to a thermal frame.
    _C.INPUT.IMAGE_DOMAIN.GRAYSCALE_PROB = 0.2
    # PIL Gaussian blur, sigma drawn uniformly in BLUR_SIGMA, with probability BLUR_PROB
    # (MoCo v2: (0.1, 2.0), 0.5); both frames.
    _C.INPUT.IMAGE_DOMAIN.BLUR_SIGMA = (0.1, 2.0)
    _C.INPUT.IMAGE_DOMAIN.BLUR_PROB = 0.5
    # Horizontal flip probability (MoCo v2: 0.5).
    _C.INPUT.IMAGE_DOMAIN.FLIP_PROB = 0.5
    # With MODEL.IMAGE_DOMAIN.CROSS_MODAL: the visible and the thermal view share one crop and
    # flip (CMC: the modality is the view; KAIST pairs are pixel-aligned). False draws a crop
    # per view, as for two views of one modality.
    _C.INPUT.IMAGE_DOMAIN.CROSS_MODAL_SHARED_CROP = True


def add_speed_config(cfg: CN) -> None:
    """Switches that change how a step runs, not what it learns."""
    _C = cfg
    # None of these changes the network or the data; benchmarks/train_step.py measures what
    # each buys (BENCHMARKS.md). Detectron2's own switches stay where they are:
    # SOLVER.AMP.ENABLED (detpre's Base configs turn it on) and CUDNN_BENCHMARK.
    # Autocast precision of the forward pass when SOLVER.AMP.ENABLED: "bf16" (no loss
    # scaling), "fp16" (with a GradScaler), or "auto": bf16 on GPUs of compute capability 8.0
    # or newer (A100, H100), fp16 on older GPUs, full precision on the CPU, where autocast
    # does not speed convolutions up. "bf16" and "fp16" need MODEL.DEVICE cuda.
    _C.SOLVER.AMP.PRECISION = "auto"
    # The losses are copied to the host (for the log, and the non-finite loss check) every
    # this many iterations; each copy makes the host wait for the GPU. 1 is Detectron2's.
    _C.SOLVER.GATHER_METRIC_PERIOD = 1
    # Keep the model's 4-D weights, and so its activations, in channels-last (NHWC) memory,
    # the layout of tensor-core convolutions.
    _C.MODEL.CHANNELS_LAST = False
    # torch.compile every backbone of the model (the detector's, and the momentum copy's in
    # box-domain pre-training) in place, so checkpoints keep their keys: "default",
    # "reduce-overhead" or "max-autotune" (torch.compile's modes); "" runs it eagerly.
    _C.MODEL.BACKBONE.COMPILE = ""
    # torch.compile's backend for MODEL.BACKBONE.COMPILE.
    _C.MODEL.BACKBONE.COMPILE_BACKEND = "inductor"


def add_evaluation_config(cfg: CN) -> None:
    """What evaluation reports, and what it refuses to evaluate."""
    _C = cfg
    # Besides COCO's AP / AP50 / AP75 (or VOC's), report box AP at every IoU threshold
    # 0.1, 0.2, ..., 0.9 and 0.50:0.95 (detpre.evaluation.iou_sweep): where pre-training
    # matters most, at high IoU (Li et al., 2019). For "coco" and "pascal_voc" datasets; the
    # sweep evaluator runs beside Detectron2's, whose "bbox" results are unchanged.
    _C.TEST.IOU_SWEEP = False
    # Detectron2's own TEST.AUG (test-time augmentation, results under "_TTA" names) and
    # TEST.PRECISE_BN work in detpre's trainer and --eval-only as their names say; see
    # detpre.engine.tta and detpre.engine.hooks.ResumablePreciseBN. No key of detpre's.

    # --eval-only refuses MODEL.WEIGHTS that leave more than this fraction of the model's
    # tensors (state-dict entries) at their initialization: missing from the checkpoint, or
    # of another shape (another architecture's weights, a typo in MODEL.WEIGHTS). No weights at
    # all leaves every tensor so. 1.0 evaluates whatever loaded, a random model included.
    _C.TEST.MAX_UNLOADED_WEIGHTS = 0.0


def add_logging_config(cfg: CN) -> None:
    """How often training progress reaches the log."""
    _C = cfg
    # Losses, ETA and metrics are written (log, metrics.json, TensorBoard) every LOG_PERIOD
    # iterations (Detectron2 hard-codes 20), and also whenever LOG_SECONDS have passed since
    # the last write, so that a run of several seconds an iteration is never silent for long.
    # 0 disables the time-based writes.
    _C.LOG_PERIOD = 20
    _C.LOG_SECONDS = 30.0
