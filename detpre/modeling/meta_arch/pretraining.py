"""What both pre-training meta-architectures (:class:`.ImageDomainPretrainer`,
:class:`.BoxDomainPretrainer`) do alike: refuse precise BN, check their two-view input, move a
momentum encoder, and warn when embeddings collapse."""

from typing import Any, Dict, List, Optional

import torch
from detectron2.config import CfgNode
from torch import nn

__all__ = ["COLLAPSE_SPREAD", "check_two_views", "collapse_warning", "ema_update_", "refuse_precise_bn"]

#: Embedding spread (see ``embedding_spread``) under which a warning says the embeddings collapse.
COLLAPSE_SPREAD = 0.05


def refuse_precise_bn(cfg: CfgNode) -> None:
    """Pre-training cannot recompute BN statistics the way a detector does (``TEST.PRECISE_BN``):
    precise BN runs the model's training forward on ``NUM_ITER`` batches, and a pre-training
    forward also moves the momentum encoder, fills the queues and counts steps. Refused when the
    model is built, naming the key, rather than quietly changing the run."""
    if cfg.TEST.PRECISE_BN.ENABLED:
        raise ValueError(
            f"TEST.PRECISE_BN.ENABLED is True, but {cfg.MODEL.META_ARCHITECTURE}'s training forward also updates its "
            "momentum encoder (and queues), so precise BN would change the pre-training; set TEST.PRECISE_BN.ENABLED "
            "False (recompute the statistics when fine-tuning instead)."
        )


def check_two_views(batched_inputs: List[Dict[str, Any]], model: str, mapper: str) -> None:
    """Every input of a training batch must hold two views (``{"views": [view1, view2]}``), as
    ``mapper`` makes them; another mapper's dicts are refused naming the key that selects it."""
    if any(len(x.get("views", ())) != 2 for x in batched_inputs):
        raise ValueError(f"{model} trains on two views per image: set INPUT.DATASET_MAPPER_NAME: {mapper}.")


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, momentum: float, copy_buffers: bool = True) -> None:
    """target <- momentum * target + (1 - momentum) * source over parameters, matched by name, in
    place (momentum 0 copies them); with ``copy_buffers``, buffers (norm statistics) are copied."""
    params = dict(source.named_parameters())
    for name, param in target.named_parameters():
        if momentum == 0.0:
            param.copy_(params[name])
        else:
            param.lerp_(params[name], 1.0 - momentum)
    if copy_buffers:
        buffers = dict(source.named_buffers())
        for name, buffer in target.named_buffers():
            buffer.copy_(buffers[name])


def collapse_warning(what: str, spread: float, iteration: int, remedy: str) -> Optional[str]:
    """The warning to log when ``what``'s embedding spread is under :data:`COLLAPSE_SPREAD`, else
    None; ``remedy`` names the config keys that counter a collapse. The caller logs it with
    ``log_every_n_seconds``, which throttles per call site: one pre-trainer's warning never
    silences the other's."""
    if spread >= COLLAPSE_SPREAD:
        return None
    return (
        f"{what} are collapsing at iteration {iteration}: spread {spread:.4f} "
        f"(about 1 when they cover the sphere). Lower the LR, or raise {remedy}."
    )
