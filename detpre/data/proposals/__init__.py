"""Unsupervised box proposals for box-domain pre-training (AlignDet, Li et al., ICCV 2023).

AlignDet pre-trains everything outside the backbone on *unlabeled* images, with selective
search boxes standing in for objects; its proposals are SoCo's. The parts, one module each:

* :mod:`.generators`: box generators by name (``soco``: SoCo's selective search,
  :mod:`.selective_search`; ``opencv_fast`` / ``opencv_quality``), each with a documented,
  deterministic order;
* :mod:`.filters`: :class:`ProposalFilter` and named presets (``coco_aligndet``: AlignDet's
  ``ratio3size0008@0.5``);
* :mod:`.formats`: Detectron2's proposal pickle and AlignDet's COCO json, both written and
  both loadable through ``DATASETS.PROPOSAL_FILES_TRAIN``;
* :mod:`.compute` and :mod:`.journal`: a dataset's proposal file, in parallel, resumable and
  sharded (``tools/precompute_proposals.py``); :mod:`.recall`: coverage of annotated objects.

``docs/aligndet.md`` compares every step with AlignDet's and SoCo's code.
"""

from .compute import MODALITIES, PROPOSALS_VERSION, SearchSettings, compute_proposals, merge_ranked, merge_shards
from .filters import FILTER_PRESETS, ProposalFilter, filter_preset, rank_logits, register_filter_preset
from .formats import load_proposals_into_dicts, read_coco_proposals, write_proposal_file
from .generators import PROPOSAL_GENERATORS, generate, register_generator
from .journal import parse_shard
from .recall import ground_truth_boxes, proposal_coverage

__all__ = [
    "FILTER_PRESETS",
    "MODALITIES",
    "PROPOSALS_VERSION",
    "PROPOSAL_GENERATORS",
    "ProposalFilter",
    "SearchSettings",
    "compute_proposals",
    "filter_preset",
    "generate",
    "ground_truth_boxes",
    "load_proposals_into_dicts",
    "merge_ranked",
    "merge_shards",
    "parse_shard",
    "proposal_coverage",
    "rank_logits",
    "read_coco_proposals",
    "register_filter_preset",
    "register_generator",
    "write_proposal_file",
]
