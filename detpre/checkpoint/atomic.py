"""Checkpoints that survive a kill at any instant.

fvcore writes ``model_XXXXXXX.pth`` in place and then ``last_checkpoint``: a kill during
the write leaves a truncated file that ``last_checkpoint`` may already name, and the next
``--resume`` dies on it. Here each file is written to a temporary name, flushed and renamed
(``last_checkpoint`` only after the checkpoint is complete), and a checkpoint that cannot be
read at resume is reported by name and the previous one is used instead.
"""

import logging
import os
from typing import Any, Dict, List

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.file_io import atomic_write

logger = logging.getLogger(__name__)


class AtomicCheckpointer(DetectionCheckpointer):
    """A ``DetectionCheckpointer`` with atomic saves and resume that skips broken files."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        with atomic_write(path, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        with atomic_write(os.path.join(self.save_dir, "last_checkpoint")) as f:
            f.write(last_filename_basename)

    def resume_candidates(self) -> List[str]:
        """The checkpoint ``last_checkpoint`` names, then every other one, newest first."""
        last = self.get_checkpoint_file()
        others = sorted(
            (f for f in self.get_all_checkpoint_files() if os.path.abspath(f) != os.path.abspath(last)),
            key=os.path.getmtime,
            reverse=True,
        )
        return ([last] if last and os.path.isfile(last) else []) + others

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        tried = []
        for candidate in self.resume_candidates():
            try:
                return self.load(candidate)
            except Exception as e:  # a truncated or corrupt file: any unpickling error
                # DetectionCheckpointer.load leaves its per-load URL state set when the load
                # raises, and asserts it is clear on the next call: clear it.
                if getattr(self, "_parsed_url_during_load", None) is not None:
                    self._parsed_url_during_load = None
                logger.error(
                    "Cannot resume from %s (%s: %s); trying the previous checkpoint.", candidate, type(e).__name__, e
                )
                tried.append(candidate)
        raise RuntimeError(f"--resume found no loadable checkpoint in {self.save_dir} (tried: {tried or 'none'}).")
