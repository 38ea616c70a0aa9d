"""Collecting an evaluator's predictions from every process, as Detectron2's evaluators do."""

import itertools
from typing import List, Optional

from detectron2.utils import comm

__all__ = ["gather_predictions"]


def gather_predictions(predictions: List, distributed: bool) -> Optional[List]:
    """All processes' ``predictions`` concatenated on the main process, None on the others
    (which then report nothing); in one process, ``predictions`` as they are."""
    if not distributed:
        return predictions
    comm.synchronize()
    gathered = comm.gather(predictions, dst=0)
    return list(itertools.chain(*gathered)) if comm.is_main_process() else None
