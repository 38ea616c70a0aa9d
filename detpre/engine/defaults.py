"""The detpre launcher's building blocks: argument parser, config set-up and logging.

``tools/train_net.py`` is Detectron2's launcher plus what long initialisation studies need:
named schedules (``--schedule 6x``), dataset subsets by name, ``--dry-run`` to see the fully
resolved config before a multi-day run is queued, and every detpre message in
``OUTPUT_DIR/log.txt``.
"""

import argparse
import logging
import os
from typing import Optional

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import ConfigError, ResolvedConfig, resolve_cfg
from ..utils.cli import LOGGER_NAMES, remove_tool_logging
from ..utils.file_io import WriteError

logger = logging.getLogger(__name__)

__all__ = ["detpre_argument_parser", "detpre_setup", "resolve_args", "setup_cfg", "check_device"]


class _IntermixedParser(argparse.ArgumentParser):
    """Flags may follow the ``KEY VALUE`` overrides (``... SOLVER.IMS_PER_BATCH 64 --dry-run``)."""

    def parse_args(self, args=None, namespace=None):
        return self.parse_intermixed_args(args, namespace)


def detpre_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """Detectron2's ``default_argument_parser`` plus ``--schedule`` and ``--dry-run``.

    Detectron2 collects everything after the first override as overrides, so a flag written
    after them (as detpre's README does) would be swallowed as a key; here flags are
    recognised anywhere and the rest are the ``KEY VALUE`` pairs.
    """
    base = default_argument_parser(epilog)
    parser = _IntermixedParser(parents=[base], add_help=False, epilog=base.epilog, formatter_class=base.formatter_class)
    for action in parser._actions:  # argparse offers no public way to change a parent's action
        if action.dest == "opts":
            action.nargs = argparse.ZERO_OR_MORE
            action.help = "KEY VALUE config overrides, applied last (after the file and the schedule)"
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
        help="print the fully resolved config as YAML (where the solver values came from in "
        "comments on top) and exit without building data or model",
    )
    return parser


def resolve_args(args: argparse.Namespace) -> ResolvedConfig:
    """The resolved (still mutable) config of the launcher's arguments, with its provenance."""
    return resolve_cfg(args.config_file, args.opts or [], getattr(args, "schedule", ""))


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The frozen config of a run: defaults < file < schedule < KEY VALUE (detpre.config)."""
    resolved = resolve_args(args)
    resolved.log()
    resolved.cfg.freeze()
    return resolved.cfg


def setup_detpre_logging(output_dir: str) -> None:
    """Send detpre's and kaisteval's loggers where Detectron2 sends its own: the console (main
    process) and ``output_dir/log.txt`` (``log.txt.rankN`` for other processes)."""
    remove_tool_logging()
    for name in LOGGER_NAMES:
        setup_logger(output_dir or None, distributed_rank=comm.get_rank(), name=name)


def detpre_setup(resolved: ResolvedConfig, args: argparse.Namespace) -> None:
    """Detectron2's ``default_setup`` (logger, environment, config.yaml), detpre's loggers, and
    the config's provenance logged where the run's log is."""
    cfg = resolved.cfg
    output_dir = cfg.OUTPUT_DIR
    try:
        default_setup(cfg, args)
    except OSError as e:
        path = getattr(e, "filename", None) or os.path.join(output_dir, "config.yaml")
        raise WriteError(path, e) from e
    setup_detpre_logging(output_dir)
    resolved.log()
    if output_dir and comm.is_main_process():
        logger.info("Full log: %s", os.path.abspath(os.path.join(output_dir, "log.txt")))


def check_device(cfg: CfgNode) -> None:
    """Fail early, with the fix, where Detectron2 would fail deep inside model building."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA device is available; "
            "add `MODEL.DEVICE cpu` to the command line to run on the CPU."
        )
