"""``DetpreCheckpointer``: the checkpointer of every detpre model and tool.

Detectron2's ``DetectionCheckpointer`` plus: atomic saves and a resume that skips broken
checkpoints (:class:`~.atomic.AtomicCheckpointer`), 3-channel stems inflated to the model's
input channels at load (:mod:`.stem_inflation`), and a report of what each load left out
(:attr:`DetpreCheckpointer.load_report`, :mod:`.load_report`).
"""

import logging
from typing import Any, Dict, Optional

from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

from .atomic import AtomicCheckpointer
from .load_report import LoadReport
from .stem_inflation import inflate_state_dict, stem_shapes_at_three_channels

logger = logging.getLogger(__name__)

__all__ = ["DetpreCheckpointer"]


class DetpreCheckpointer(AtomicCheckpointer):
    """detpre's checkpointer: atomic saves and safe resume, plus stem inflation at load.

    ``MODEL.WEIGHTS`` pointing at ImageNet (``.pkl``) or COCO (``.pkl``/``.pth``) weights
    "just works" for a 4/6-channel (or 1-channel) stem: see the module docstring. After each
    load, :attr:`load_report` says which of the model's tensors the file did not provide
    (None when nothing was loaded), for the checks of ``--eval-only``.
    """

    load_report: Optional[LoadReport] = None

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        self.load_report = None
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint: Dict[str, Any]):
        model_state = self.model.state_dict()
        self._convert_ndarray_to_tensor(checkpoint["model"])
        if checkpoint.get("matching_heuristics", False):
            # Detectron2 renames by suffix matching and drops any shape mismatch while doing
            # so: rename here with the stems shown at 3 channels, so the RGB stem survives
            # the renaming to be inflated; then let fvcore load the renamed dict as is.
            checkpoint["model"] = align_and_update_state_dicts(
                {**model_state, **stem_shapes_at_three_channels(model_state)},
                checkpoint["model"],
                c2_conversion=checkpoint.get("__author__", None) == "Caffe2",
            )
            checkpoint["matching_heuristics"] = False
        inflate_state_dict(checkpoint["model"], model_state)
        incompatible = super()._load_model(checkpoint)
        self.load_report = LoadReport(
            missing=list(incompatible.missing_keys),
            unexpected=list(incompatible.unexpected_keys),
            wrong_shape=[key for key, *_ in incompatible.incorrect_shapes],
        )
        unloaded = len(self.load_report.unloaded())
        logger.info(
            "Loaded %d of the model's %d tensors; %d left at their initialization, %d in the file unused.",
            len(model_state) - unloaded,
            len(model_state),
            unloaded,
            len(self.load_report.unexpected),
        )
        return incompatible
