"""Every dataset name detpre predefines, registered on import (Detectron2's ``builtin.py``
split: names and where their files are here, loaders in :mod:`.demo`, :mod:`.kaist` and
:mod:`.subsets`).

* ``detpre_demo_train`` / ``detpre_demo_val``: the synthetic demo data, drawn on first use
  under ``$DETPRE_DEMO_ROOT`` or ``$DETECTRON2_DATASETS/detpre_demo``;
* the KAIST datasets of :data:`BUILTIN_KAIST`, under ``$DETECTRON2_DATASETS/kaist``
  (``datasets/README.md``);
* the COCO subsets of both papers (:data:`~.subsets.PAPER_SUBSETS`, seed 0) of Detectron2's
  ``coco_2017_train``; any other ``<source>_<size>_s<seed>`` name is registered when a config
  names it.

Nothing is read here: every loader runs when Detectron2 first asks for the dataset.
"""

import os

from detectron2.data import DatasetCatalog

from .demo import register_demo
from .kaist import TRAINING_SETTING, register_kaist
from .subsets import register_paper_subsets

__all__ = ["BUILTIN_KAIST", "register_all_kaist"]

# name: (image set, annotation version, training setting)
BUILTIN_KAIST = {
    "kaist_train_all02": ("train-all-02", "original", TRAINING_SETTING),
    "kaist_train_all02_paired": ("train-all-02", "paired", TRAINING_SETTING),
    "kaist_train_all02_sanitized": ("train-all-02", "sanitized", TRAINING_SETTING),
    "kaist_test_all20": ("test-all-20", "original", None),
    "kaist_test_all20_improved": ("test-all-20", "improved", None),
}


def register_all_kaist(root: str) -> None:
    """Register the builtin KAIST datasets under ``root`` (lazily: nothing is read yet)."""
    for name, (image_set, version, setting) in BUILTIN_KAIST.items():
        register_kaist(name, root, image_set, version, setting=setting)


_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_demo()
register_all_kaist(os.path.join(_root, "kaist"))
if "coco_2017_train" in DatasetCatalog.list():
    register_paper_subsets()
