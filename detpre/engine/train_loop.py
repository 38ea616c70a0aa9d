"""The training step of detpre's trainer: Detectron2's ``SimpleTrainer`` or ``AMPTrainer``,
chosen and set up from the config.

Detectron2's ``DefaultTrainer`` runs mixed precision only in fp16 with a loss scaler and
gathers the losses to the host every iteration. On GPUs with bf16 tensor cores (A100,
H100) bf16 needs no loss scaling, and the per-iteration gather makes the host wait for the
GPU once a step; both are config switches here (``SOLVER.AMP.PRECISION``,
``SOLVER.GATHER_METRIC_PERIOD``), on Detectron2's own trainers.
"""

import logging
from typing import Iterable, Optional

import torch
from detectron2.config import CfgNode
from detectron2.engine import AMPTrainer, SimpleTrainer

from ..config import ConfigError

logger = logging.getLogger(__name__)

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_precision(cfg: CfgNode) -> Optional[torch.dtype]:
    """The autocast dtype of a run (``SOLVER.AMP``), or None for full precision."""
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    name = cfg.SOLVER.AMP.PRECISION
    device = torch.device(cfg.MODEL.DEVICE)
    if name == "auto":
        if device.type != "cuda":
            logger.info("SOLVER.AMP.PRECISION auto: full precision on MODEL.DEVICE %s.", cfg.MODEL.DEVICE)
            return None
        # Compute capability 8.0 (Ampere) brought bf16 tensor cores; older GPUs would emulate it.
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    if name not in PRECISIONS:
        raise ConfigError(f"SOLVER.AMP.PRECISION {name!r} is not one of 'auto', {', '.join(map(repr, PRECISIONS))}.")
    if device.type != "cuda":
        raise ConfigError(
            f"SOLVER.AMP.PRECISION {name!r} needs a CUDA device but MODEL.DEVICE is {cfg.MODEL.DEVICE!r}: "
            "use 'auto' (full precision on the CPU) or SOLVER.AMP.ENABLED False."
        )
    return PRECISIONS[name]


def build_step_trainer(
    cfg: CfgNode, model: torch.nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer
) -> SimpleTrainer:
    """Detectron2's trainer of one step for this config: ``AMPTrainer`` in the precision of
    :func:`amp_precision` (a loss scaler only for fp16), else ``SimpleTrainer``."""
    period = cfg.SOLVER.GATHER_METRIC_PERIOD
    if not isinstance(period, int) or period < 1:
        raise ConfigError(f"SOLVER.GATHER_METRIC_PERIOD must be a positive integer, got {period!r}.")
    precision = amp_precision(cfg)
    if precision is None:
        return SimpleTrainer(model, data_loader, optimizer, gather_metric_period=period)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
    return AMPTrainer(
        model, data_loader, optimizer, gather_metric_period=period, grad_scaler=scaler, precision=precision
    )
