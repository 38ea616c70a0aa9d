"""The detpre launcher's building blocks: argument parser and config set-up.

``tools/train_net.py`` is Detectron2's launcher plus what long initialisation studies need:
named schedules (``--schedule 6x``), dataset subsets by name, and ``--dry-run`` to see the
fully resolved config before a multi-day run is queued.
"""
import argparse
import logging
from typing import Optional

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser

from ..config import add_detpre_config
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
    # yacs reports an unknown key or a wrong type as a bare AssertionError/KeyError, and a
    # YAML syntax error or a missing _BASE_ file in its own terms; say which file.
    try:
        if args.config_file:
            cfg.merge_from_file(args.config_file)
    except (AssertionError, KeyError, ValueError, TypeError, OSError, yaml.YAMLError) as e:
        raise ConfigError(f"Invalid config file {args.config_file}: {type(e).__name__}: {e}") from e
    try:
        cfg.merge_from_list(args.opts or [])
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"Invalid command-line override {args.opts}: {e}") from e
    apply_schedule(cfg, getattr(args, "schedule", ""))
    check_input_channels(cfg)
    for key in ("TRAIN", "TEST"):
        names = cfg.DATASETS[key]
        if not all(isinstance(name, str) and name for name in names):
            raise ConfigError(f"DATASETS.{key} must list dataset names, got {names!r}.")
        for name in names:
            ensure_subset_registered(name)
    cfg.freeze()
    return cfg


# Channels of Detectron2's own image formats; multispectral formats (KAIST) are checked by
# their mapper, which knows its modalities.
_FORMAT_CHANNELS = {"BGR": 3, "RGB": 3, "YUV-BT.601": 3, "L": 1}


def check_input_channels(cfg: CfgNode) -> None:
    """PIXEL_MEAN, PIXEL_STD and INPUT.FORMAT must agree on the number of input channels.

    Detectron2 would only fail at the first forward pass, deep in a broadcast, after the
    data was loaded; the backbone's stem is sized from ``len(PIXEL_MEAN)``.
    """
    mean, std = cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD
    if len(mean) != len(std):
        raise ConfigError(
            f"MODEL.PIXEL_MEAN has {len(mean)} values ({list(mean)}) but MODEL.PIXEL_STD has "
            f"{len(std)} ({list(std)}): give one per input channel."
        )
    expected = _FORMAT_CHANNELS.get(cfg.INPUT.FORMAT)
    if expected is None and not cfg.INPUT.DATASET_MAPPER_NAME:
        raise ConfigError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT!r} is not one of Detectron2's image formats "
            f"({', '.join(_FORMAT_CHANNELS)}); multispectral formats such as 'BGRT' need "
            "INPUT.DATASET_MAPPER_NAME 'MultispectralDatasetMapper'."
        )
    if expected is not None and len(mean) != expected:
        raise ConfigError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT!r} has {expected} channels but MODEL.PIXEL_MEAN has "
            f"{len(mean)} values ({list(mean)})."
        )


def check_device(cfg: CfgNode) -> None:
    """Fail early, with the fix, where Detectron2 would fail deep inside model building."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA device is available; "
            "add `MODEL.DEVICE cpu` to the command line to run on the CPU."
        )
