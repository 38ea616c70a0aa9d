"""Unsupervised box proposals for box-domain pre-training (AlignDet, Li et al., ICCV 2023).

AlignDet pre-trains everything outside the backbone on *unlabeled* images, with selective
search boxes standing in for objects; its proposals are SoCo's. The parts, one module each:

* :mod:`.generators`: box generators by name (``soco``: SoCo's selective search,
  :mod:`.selective_search`; ``opencv_fast`` / ``opencv_quality``; the thermal
  ``thermal_blobs`` / ``thermal_mser``, :mod:`.thermal`), each with a documented,
  deterministic order;
* :mod:`.sources`: which generators run on which frame of a pair (``NAME@FRAME+...``) and
  the registered unions (``kaist_thermal``, ``kaist_multispectral``);
* :mod:`.filters`: :class:`ProposalFilter`, the fusion of several sources, and named presets
  (``coco_aligndet``: AlignDet's ``ratio3size0008@0.5``; ``kaist_pedestrian``);
* :mod:`.formats`: Detectron2's proposal pickle and AlignDet's COCO json, both written and
  both loadable through ``DATASETS.PROPOSAL_FILES_TRAIN``;
* :mod:`.compute` and :mod:`.journal`: a dataset's proposal file, in parallel, resumable and
  sharded (``tools/precompute_proposals.py``); :mod:`.recall`: coverage of annotated objects.

``docs/aligndet.md`` compares every step with AlignDet's and SoCo's code;
``docs/kaist_proposals.md`` describes the KAIST sources and preset, with their recall.
"""

from .compute import PROPOSALS_VERSION, SearchSettings, compute_proposals, merge_shards, settings_from_cfg
from .filters import FILTER_PRESETS, ProposalFilter, filter_preset, merge_ranked, rank_logits, register_filter_preset
from .formats import load_proposals_into_dicts, read_coco_proposals, write_proposal_file
from .generators import PROPOSAL_GENERATORS, THERMAL_GENERATORS, generate, register_generator
from .journal import parse_shard
from .recall import ground_truth_boxes, proposal_coverage
from .sources import MODALITIES, PROPOSAL_UNIONS, parse_sources, register_union

__all__ = [
    "FILTER_PRESETS",
    "MODALITIES",
    "PROPOSALS_VERSION",
    "PROPOSAL_GENERATORS",
    "PROPOSAL_UNIONS",
    "ProposalFilter",
    "SearchSettings",
    "THERMAL_GENERATORS",
    "compute_proposals",
    "filter_preset",
    "generate",
    "ground_truth_boxes",
    "load_proposals_into_dicts",
    "merge_ranked",
    "merge_shards",
    "parse_shard",
    "parse_sources",
    "proposal_coverage",
    "rank_logits",
    "read_coco_proposals",
    "register_filter_preset",
    "register_generator",
    "register_union",
    "settings_from_cfg",
    "write_proposal_file",
]
