"""Reading checkpoint files, with errors that name the file.

``torch.load`` on an empty file raises ``EOFError``, on a text file ``UnpicklingError``, on a
truncated zip a ``RuntimeError`` about its central directory: none names the path, and the
tools that convert weights would pass them on as tracebacks. Every tool reads checkpoints
through :func:`load_checkpoint_file` / :func:`read_model_state`.
"""

import os
import pickle
from typing import Any, Dict

import torch
from detectron2.utils.file_io import PathManager

__all__ = ["CheckpointError", "load_checkpoint_file", "read_model_state"]


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint; the message names it."""


def load_checkpoint_file(path: str) -> Any:
    """What ``path`` holds: ``torch.load`` of a ``.pth``, ``pickle`` of a Detectron2 ``.pkl``.

    ``path`` may be any name Detectron2's ``PathManager`` resolves (URLs are downloaded to its
    cache). Raises ``FileNotFoundError`` or :class:`CheckpointError`, naming ``path``.
    """
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    if os.path.getsize(local) == 0:
        raise CheckpointError(f"Checkpoint {path} is an empty file.")
    try:
        if local.endswith(".pkl"):
            with open(local, "rb") as f:
                return pickle.load(f, encoding="latin1")
        return torch.load(local, map_location="cpu")
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, AttributeError, ImportError) as e:
        raise CheckpointError(f"{path} is not a checkpoint torch can read ({type(e).__name__}: {e}).") from None


def read_model_state(path: str) -> Dict[str, Any]:
    """The model state dict of a Detectron2 checkpoint (``{"model": ...}``) or a bare state dict."""
    data = load_checkpoint_file(path)
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        found = type(data).__name__ if state is None else "an empty mapping"
        raise CheckpointError(f"{path} holds no model state dict (found {found}).")
    return state
