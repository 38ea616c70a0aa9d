"""Normalization layers by name: detpre's registry on top of Detectron2's ``get_norm``, and
the one place where a config's norm names become buildable in this process.

Two problems, one walk over every config key that ends with ``NORM`` (``MODEL.RESNETS.NORM``,
``MODEL.FPN.NORM``, ``MODEL.ROI_BOX_HEAD.NORM``, ``MODEL.ROI_MASK_HEAD.NORM``,
``MODEL.RETINANET.NORM``, ... and keys added by projects), done by :func:`resolve_norms`:

* **SyncBN anywhere.** Configs for 8-GPU runs say ``NORM: "SyncBN"`` (one of the two
  normalizations that make training from scratch work, *Rethinking ImageNet Pre-training*
  Sec. 3). The same config must build and train in one process (a CPU test, a debugging run)
  and in several CPU processes, where ``torch.nn.SyncBatchNorm`` depends on the torch version
  and process state: torch 2.3 falls back to plain batch norm when ``torch.distributed`` is not
  initialised but raises on CPU tensors once it is. So "SyncBN" becomes "BN" in one process
  and Detectron2's "naiveSyncBN" (all-reduce through any backend) in several CPU processes,
  logged; parameters and buffers are the same, so checkpoints move freely between them.
* **Norms Detectron2 does not name.** Detectron2's ``get_norm`` knows a fixed set of names
  but takes any ``channels -> nn.Module`` callable. A factory registered in
  :data:`NORM_REGISTRY` (GroupNorm with another group count, ...) is put in place of its
  name, so Detectron2's own builders (ResNet, FPN, box and mask heads) build it unchanged.

detpre's ``build_model`` / ``build_backbone`` (:mod:`detpre.modeling.build`) apply it; the
resolved config holds callables and is used to build, never saved.
"""

import logging
from typing import Callable, List, Optional, Tuple, Union

from detectron2.config import CfgNode
from detectron2.layers import get_norm as detectron2_get_norm
from detectron2.utils import comm
from detectron2.utils.registry import Registry
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["NORM_REGISTRY", "SYNC_NORMS", "get_norm", "resolve_norms"]

NORM_REGISTRY = Registry("NORM")
NORM_REGISTRY.__doc__ = """
Normalization layers by config name: each entry, registered under the name configs use
(``@NORM_REGISTRY.register("GN16")``), takes the number of channels and returns the module.
Detectron2's own names ("BN", "GN", "SyncBN", "FrozenBN", ...) need no entry.
"""

# Norm names that Detectron2's ``get_norm`` maps to ``torch.nn.SyncBatchNorm``. (Its
# "naiveSyncBN" already runs as plain BN in one process and all-reduces through any backend,
# so it is left alone.)
SYNC_NORMS = ("SyncBN", "nnSyncBN")

NormSpec = Union[str, Callable[[int], nn.Module], None]


def get_norm(norm: NormSpec, out_channels: int) -> Optional[nn.Module]:
    """A norm module: a name of :data:`NORM_REGISTRY`, else whatever Detectron2's ``get_norm``
    builds (its names, a callable, or None / "" for no norm)."""
    if isinstance(norm, str) and norm in NORM_REGISTRY:
        return NORM_REGISTRY.get(norm)(out_channels)
    return detectron2_get_norm(norm, out_channels)


def _norm_keys(node: CfgNode, path: str = "") -> List[Tuple[str, CfgNode, str]]:
    """All ``(full_key, parent_node, key)`` of the config whose key ends with ``NORM``."""
    found = []
    for key, value in node.items():
        full = f"{path}.{key}" if path else key
        if isinstance(value, CfgNode):
            found.extend(_norm_keys(value, full))
        elif key.endswith("NORM") and isinstance(value, str):
            found.append((full, node, key))
    return found


def resolve_norms(cfg: CfgNode, world_size: int = -1) -> CfgNode:
    """A clone of ``cfg`` whose norms can be built in this process (see the module docstring).

    * one process: "SyncBN" -> "BN"; several CPU processes: -> "naiveSyncBN"; several GPU
      processes: unchanged;
    * a name registered in :data:`NORM_REGISTRY` -> its factory.

    Args:
        cfg: the config; it is not modified, and the clone keeps its frozen state.
        world_size: number of processes that will train together; -1 (default) asks
            ``detectron2.utils.comm.get_world_size()``.
    """
    if world_size == -1:
        world_size = comm.get_world_size()
    if world_size < 1:
        raise ValueError(f"resolve_norms: world_size must be >= 1, got {world_size}.")
    on_cpu = str(cfg.MODEL.DEVICE).startswith("cpu")
    sync = None if world_size > 1 and not on_cpu else ("BN" if world_size == 1 else "naiveSyncBN")
    why = "one process" if world_size == 1 else f"{world_size} CPU processes"

    out = cfg.clone()
    was_frozen = out.is_frozen()
    out.defrost()
    changed = []
    for full, node, key in _norm_keys(out):
        if sync is not None and node[key] in SYNC_NORMS:
            changed.append(f"{full}: {node[key]} -> {sync} ({why})")
            node[key] = sync
        elif node[key] in NORM_REGISTRY:
            # yacs checks types on merge only: the factory stands where its name was.
            node[key] = NORM_REGISTRY.get(node[key])
    if changed:
        logger.info("SyncBN resolved: %s", "; ".join(changed))
    if was_frozen:
        out.freeze()
    return out
