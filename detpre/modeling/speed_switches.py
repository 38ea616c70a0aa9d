"""How a built model executes: memory format and compilation (``MODEL.CHANNELS_LAST``,
``MODEL.BACKBONE.COMPILE``). Neither changes what the model computes, its parameters or
its checkpoint keys, so a run can switch them on or off at resume.
"""

from typing import List

import torch
from detectron2.config import CfgNode
from detectron2.modeling import Backbone
from torch import nn

# torch.compile's modes (its documentation); "default" is its mode=None.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def outermost_backbones(model: nn.Module) -> List[Backbone]:
    """Every ``Backbone`` of the model that is not inside another one (the detector's; in
    box-domain pre-training, the online and the momentum detector's)."""
    found: List[Backbone] = []
    names: List[str] = []
    for name, module in model.named_modules():
        if isinstance(module, Backbone) and not any(name.startswith(outer + ".") for outer in names):
            found.append(module)
            names.append(name)
    return found


def apply_execution_options(cfg: CfgNode, model: nn.Module) -> nn.Module:
    """Put the model in channels-last memory and compile its backbones, as the config asks."""
    if cfg.MODEL.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    mode = cfg.MODEL.BACKBONE.COMPILE
    if mode:
        if mode not in COMPILE_MODES:
            raise ValueError(f"MODEL.BACKBONE.COMPILE {mode!r} is not one of {COMPILE_MODES} (or '' for eager).")
        backbones = outermost_backbones(model)
        if not backbones:
            raise ValueError(
                f"MODEL.BACKBONE.COMPILE {mode!r}: {type(model).__name__} has no detectron2 Backbone to compile."
            )
        for backbone in backbones:
            # Module.compile compiles in place: state_dict keys stay those of the eager model.
            backbone.compile(mode=None if mode == "default" else mode, backend=cfg.MODEL.BACKBONE.COMPILE_BACKEND)
    return model
