"""The detpre launcher's building blocks: argument parser, config set-up and trainer.

``tools/train_net.py`` is Detectron2's launcher plus what long initialisation studies need:
named schedules (``--schedule 6x``), dataset subsets by name, and ``--dry-run`` to see the
fully resolved config before a multi-day run is queued.
"""
import argparse
import logging
from typing import Optional

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators

from ..config import add_detpre_config
from ..data.dataset_mappers import MAPPER_REGISTRY
from ..data.datasets.subsets import ensure_subset_registered
from ..solver import apply_schedule

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config that cannot describe a run; the message names the file, key or value."""


def detpre_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """Detectron2's ``default_argument_parser`` plus ``--schedule`` and ``--dry-run``."""
    parser = default_argument_parser(epilog)
    parser.add_argument(
        "--schedule",
        default="",
        metavar="KX",
        help="named schedule such as 1x, 6x or 0.5x (sets SOLVER.SCHEDULE.NAME): 1x is "
        "SOLVER.SCHEDULE.ITERS_PER_X iterations at 16 images, LR drops at the last 60k/20k",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the fully resolved config as YAML and exit without building data or model",
    )
    return parser


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """Build the frozen config of a run: file, then KEY VALUE overrides, then the schedule.

    The schedule is applied last so that ``SOLVER.IMS_PER_BATCH`` given on the command line
    is the one it scales for; dataset subset names are registered here so that every rank
    resolves them the same way before any data is loaded.
    """
    cfg = get_cfg()
    add_detpre_config(cfg)
    # yacs reports an unknown key or a wrong type as a bare AssertionError/KeyError; say where.
    try:
        if args.config_file:
            cfg.merge_from_file(args.config_file)
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"Invalid config file {args.config_file}: {e}") from e
    try:
        cfg.merge_from_list(args.opts or [])
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"Invalid command-line override {args.opts}: {e}") from e
    apply_schedule(cfg, getattr(args, "schedule", ""))
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        ensure_subset_registered(name)
    cfg.freeze()
    return cfg


def check_device(cfg: CfgNode) -> None:
    """Fail early, with the fix, where Detectron2 would fail deep inside model building."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA device is available; "
            "add `MODEL.DEVICE cpu` to the command line to run on the CPU."
        )


class DetpreTrainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer`` with detpre's mappers and evaluators."""

    @classmethod
    def build_mapper(cls, cfg: CfgNode, is_train: bool):
        """The mapper named by ``INPUT.DATASET_MAPPER_NAME``; None lets Detectron2 use its own."""
        name = cfg.INPUT.DATASET_MAPPER_NAME
        return MAPPER_REGISTRY.get(name)(cfg, is_train) if name else None

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(cfg, mapper=cls.build_mapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name, mapper=cls.build_mapper(cfg, False))

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
    ) -> DatasetEvaluator:
        """Pick the evaluator from the dataset's ``evaluator_type`` metadata."""
        output_folder = output_folder or f"{cfg.OUTPUT_DIR}/inference/{dataset_name}"
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        evaluators = []
        if evaluator_type in ("coco", "coco_panoptic_seg"):
            evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder))
        if evaluator_type == "kaist":
            from ..evaluation import KAISTEvaluator

            evaluators.append(KAISTEvaluator(dataset_name, output_dir=output_folder))
        if not evaluators:
            raise NotImplementedError(
                f"No detpre evaluator for dataset {dataset_name!r} (evaluator_type="
                f"{evaluator_type!r}); register it with evaluator_type 'coco' or 'kaist'."
            )
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
