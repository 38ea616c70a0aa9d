"""Make a config's normalization layers buildable in the process that builds the model.

Configs for 8-GPU runs say ``NORM: "SyncBN"`` (one of the two normalizations that make
training from scratch work, *Rethinking ImageNet Pre-training* Sec. 3). The same config must
also build and train in one process — a CPU test, a debugging run, a single-GPU job —
where there is nothing to synchronize with. There ``torch.nn.SyncBatchNorm`` depends on the
torch version and the process state: torch 2.3 silently falls back to plain batch norm when
``torch.distributed`` is not initialised but raises on CPU tensors once it is (even with a
world of one), and older releases reject CPU tensors outright. This module makes
that choice explicit and logged, for every ``NORM`` key of the config (backbone, FPN and
heads alike), instead of leaving it to the torch version.
"""

import logging
from typing import List, Tuple

from detectron2.config import CfgNode
from detectron2.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["resolve_sync_norm", "SYNC_NORMS"]

# Norm names that Detectron2's ``get_norm`` maps to ``torch.nn.SyncBatchNorm``. (Its
# "naiveSyncBN" already runs as plain BN in one process and all-reduces through any backend,
# so it is left alone.)
SYNC_NORMS = ("SyncBN", "nnSyncBN")


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


def resolve_sync_norm(cfg: CfgNode, world_size: int = -1) -> CfgNode:
    """Return a clone of ``cfg`` whose SyncBN norms can run in this process.

    * one process (``world_size == 1``): "SyncBN" -> "BN". Synchronizing over one worker is
      plain batch norm; this states it instead of relying on torch's fallback. Parameters and
      buffers are the same, so checkpoints move freely between the two.
    * several processes on CPU: "SyncBN" -> "naiveSyncBN", Detectron2's all-reduce
      implementation, since ``torch.nn.SyncBatchNorm`` only synchronizes CUDA tensors.
    * several processes on GPU: unchanged.

    Every key whose name ends with ``NORM`` is considered (``MODEL.RESNETS.NORM``,
    ``MODEL.FPN.NORM``, ``MODEL.ROI_BOX_HEAD.NORM``, ``MODEL.ROI_MASK_HEAD.NORM``,
    ``MODEL.SEM_SEG_HEAD.NORM``, ... and keys added by projects), and each change is logged.

    Args:
        cfg: the config; it is not modified, and the clone keeps its frozen state.
        world_size: number of processes that will train together; -1 (default) asks
            ``detectron2.utils.comm.get_world_size()``.
    """
    if world_size == -1:
        world_size = comm.get_world_size()
    if world_size < 1:
        raise ValueError(f"resolve_sync_norm: world_size must be >= 1, got {world_size}.")
    on_cpu = str(cfg.MODEL.DEVICE).startswith("cpu")
    if world_size > 1 and not on_cpu:
        return cfg.clone()
    replacement = "BN" if world_size == 1 else "naiveSyncBN"
    why = "one process" if world_size == 1 else f"{world_size} CPU processes"

    out = cfg.clone()
    was_frozen = out.is_frozen()
    out.defrost()
    changed = []
    for full, node, key in _norm_keys(out):
        if node[key] in SYNC_NORMS:
            changed.append(f"{full}: {node[key]} -> {replacement}")
            node[key] = replacement
    if changed:
        logger.info("SyncBN resolved for %s: %s", why, "; ".join(changed))
    if was_frozen:
        out.freeze()
    return out
