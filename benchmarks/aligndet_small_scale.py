#!/usr/bin/env python
"""AlignDet at toy scale on the demo data: does box-domain pre-training help, and which loss?

    python benchmarks/aligndet_small_scale.py --seeds 0 1 2 3 4 --output-dir output/aligndet_toy

Five arms, paired by seed (the same seed gives every arm the same random detector init and
the same fine-tuning batches), all fine-tuned with ``configs/AlignDet/Demo/finetune_*`` (the
demo's GN R18-FPN Faster R-CNN on 50 labeled images, AlignDet's recipe) and evaluated (COCO
AP) on the 100 val images:

* ``a``: no pre-training, ``F`` fine-tuning iterations;
* ``b``: no pre-training, ``F + P`` fine-tuning iterations (compute-matched: the pre-training's
  iterations go to fine-tuning instead; the LR steps scale with the length);
* ``c``: box-domain pre-training (``configs/AlignDet/Demo/pretrain_*``, ``P`` iterations on 200
  unlabeled images), full loss, then ``F`` fine-tuning iterations;
* ``d``: as ``c``, regression only (``MODEL.BOX_DOMAIN.CONTRASTIVE_WEIGHT 0``);
* ``e``: as ``c``, contrastive only (``REGRESSION_WEIGHT 0``, ``MODEL.RPN.LOSS_WEIGHT 0``).

The proposals are SoCo's selective search with AlignDet's filter (``coco_aligndet``), the
defaults of ``tools/precompute_proposals.py``, at the images' own size unless
``--search-size``; their boxes per image and the recall of the (never used) annotations of
the unlabeled images are printed first. Per arm: per-seed AP / AP50, mean and sample
standard deviation; then each arm's paired difference to ``a`` and ``b``. Results go to
``<output-dir>/results.json``; checkpoints are deleted once used.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from typing import Dict, List, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402

import detpre  # noqa: E402,F401  (registers detpre's datasets and components)
from detpre.checkpoint.reading import read_model_state  # noqa: E402
from detpre.config import load_cfg  # noqa: E402
from detpre.data.datasets.subsets import ensure_subset_registered  # noqa: E402
from detpre.data.proposals import (  # noqa: E402
    SearchSettings,
    compute_proposals,
    ground_truth_boxes,
    load_proposals_into_dicts,
    proposal_coverage,
)
from detpre.engine.trainer import DetpreTrainer  # noqa: E402
from detpre.modeling.meta_arch.box_domain_weights import box_domain_to_detector  # noqa: E402
from detpre.utils.file_io import atomic_write  # noqa: E402

CONFIGS = os.path.join(REPO, "configs", "AlignDet", "Demo")
PRETRAIN = os.path.join(CONFIGS, "pretrain_faster_rcnn_R18_FPN.yaml")
FINETUNE = os.path.join(CONFIGS, "finetune_faster_rcnn_R18_FPN.yaml")
ARMS = {
    "a": "no pre-training, F iterations",
    "b": "no pre-training, F + P iterations (compute-matched)",
    "c": "box-domain pre-training, full loss",
    "d": "box-domain pre-training, regression only",
    "e": "box-domain pre-training, contrastive only",
}
#: Pre-training overrides of the arms that pre-train.
PRETRAIN_OPTS = {
    "c": [],
    "d": ["MODEL.BOX_DOMAIN.CONTRASTIVE_WEIGHT", "0.0"],
    "e": ["MODEL.BOX_DOMAIN.REGRESSION_WEIGHT", "0.0", "MODEL.RPN.LOSS_WEIGHT", "0.0"],
}


def schedule(config: str, iters: int) -> List[str]:
    """SOLVER overrides that run ``config``'s schedule in ``iters`` iterations (LR steps and
    warm-up scaled with the length)."""
    solver = load_cfg(config, []).SOLVER
    scale = iters / solver.MAX_ITER
    steps = tuple(min(iters - 1, max(1, round(s * scale))) for s in solver.STEPS)  # each < MAX_ITER
    warmup = max(1, round(solver.WARMUP_ITERS * scale))
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str(steps), "SOLVER.WARMUP_ITERS", str(warmup)]


def train(config: str, seed: int, output_dir: str, opts: Sequence[str]) -> DetpreTrainer:
    cfg = load_cfg(
        config,
        ["MODEL.DEVICE", "cpu", "SEED", str(seed), "OUTPUT_DIR", output_dir, "DATALOADER.NUM_WORKERS", "0", *opts],
    )
    seed_all_rng(seed)
    trainer = DetpreTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def evaluate(trainer: DetpreTrainer, val: str, output_dir: str) -> Dict[str, float]:
    """COCO AP on ``val``; evaluation files under ``output_dir`` (kept: COCOEvaluator caches
    the converted annotations of a dataset without a json file there for the whole process)."""
    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (val,)
    cfg.OUTPUT_DIR = output_dir
    bbox = DetpreTrainer.test(cfg, trainer.model)["bbox"]
    return {"AP": bbox["AP"], "AP50": bbox["AP50"]}


def proposals(unlabeled: str, path: str, settings: SearchSettings, workers: int) -> Dict[str, float]:
    """Write the proposal file of the unlabeled images; its boxes per image and recall."""
    dicts = DatasetCatalog.get(unlabeled)
    if not os.path.exists(path):
        compute_proposals(dicts, path, settings, workers)
    loaded = load_proposals_into_dicts([dict(d) for d in dicts], path)
    boxes = [d["proposal_boxes"] for d in loaded]
    gt = [ground_truth_boxes(d) for d in dicts]
    stats = {"boxes_per_image": float(np.mean([len(b) for b in boxes])), "images": len(boxes)}
    stats["images_without_proposals"] = sum(len(b) == 0 for b in boxes)
    for iou in (0.5, 0.7):
        cov = proposal_coverage(boxes, gt, iou)
        stats[f"recall@{iou}"] = cov["covered"] / max(cov["total"], 1)
        stats["objects"] = cov["total"]
    return stats


def run_seed(args, seed: int, proposal_file: str) -> Dict[str, Dict[str, float]]:
    """Every arm of one seed: ``{arm: {"AP", "AP50", "seconds"}}``."""
    base = ["DATASETS.TEST", "()", "DATASETS.TRAIN", f"('{args.labeled}',)"]
    finetune = schedule(FINETUNE, args.finetune_iters)
    longer = schedule(FINETUNE, args.finetune_iters + args.pretrain_iters)
    pretrain = schedule(PRETRAIN, args.pretrain_iters)
    results = {}
    for arm in args.arms:
        start = time.perf_counter()
        work = os.path.join(args.output_dir, f"seed{seed}", arm)
        weights = ""
        if arm in PRETRAIN_OPTS:
            opts = [
                "DATASETS.TRAIN",
                f"('{args.unlabeled}',)",
                "DATASETS.PROPOSAL_FILES_TRAIN",
                f"('{proposal_file}',)",
            ]
            train(PRETRAIN, seed, os.path.join(work, "pretrain"), [*opts, *pretrain, *PRETRAIN_OPTS[arm]])
            weights = os.path.join(work, "detector.pth")
            detector, _ = box_domain_to_detector(read_model_state(os.path.join(work, "pretrain", "model_final.pth")))
            with atomic_write(weights, "wb") as f:
                torch.save({"model": detector}, f)
            shutil.rmtree(os.path.join(work, "pretrain"))
        schedule_opts = longer if arm == "b" else finetune
        trainer = train(
            FINETUNE, seed, os.path.join(work, "finetune"), [*base, *schedule_opts, "MODEL.WEIGHTS", weights]
        )
        results[arm] = evaluate(trainer, args.val, args.output_dir)
        results[arm]["seconds"] = time.perf_counter() - start
        print(
            f"seed {seed} arm {arm}: AP {results[arm]['AP']:.2f} AP50 {results[arm]['AP50']:.2f} "
            f"({results[arm]['seconds']:.0f} s)",
            flush=True,
        )
        del trainer
        shutil.rmtree(work)
    return results


def summarize(per_seed: Dict[int, Dict[str, Dict[str, float]]], arms: Sequence[str]) -> List[str]:
    seeds = sorted(per_seed)
    lines = ["| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |", "|---" * (len(seeds) + 3) + "|"]
    for metric in ("AP", "AP50"):
        for arm in arms:
            values = [per_seed[s][arm][metric] for s in seeds]
            std = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells = " | ".join(f"{v:.2f}" for v in values)
            lines.append(f"| {metric} ({arm}) {ARMS[arm]} | {cells} | {statistics.mean(values):.2f} | {std:.2f} |")
    for ref in ("a", "b"):
        if ref not in arms:
            continue
        for arm in arms:
            if arm == ref or (ref == "b" and arm == "a"):  # (a) - (b) is -((b) - (a))
                continue
            diffs = [per_seed[s][arm]["AP"] - per_seed[s][ref]["AP"] for s in seeds]
            std = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
            wins = sum(d > 0 for d in diffs)
            lines.append(
                f"AP ({arm}) - ({ref}), paired: "
                + " ".join(f"{d:+.2f}" for d in diffs)
                + f"; mean {statistics.mean(diffs):+.2f}, std {std:.2f}, {wins}/{len(diffs)} seeds better"
            )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--output-dir", default="output/aligndet_toy")
    parser.add_argument("--pretrain-iters", type=int, default=60, help="P")
    parser.add_argument("--finetune-iters", type=int, default=60, help="F")
    parser.add_argument("--unlabeled", default="detpre_demo_train_200_s0")
    parser.add_argument("--labeled", default="detpre_demo_train_50_s0")
    parser.add_argument("--val", default="detpre_demo_val")
    parser.add_argument("--search-size", type=int, default=0, help="proposals: longer side searched (0: as is)")
    parser.add_argument("--workers", type=int, default=1, help="proposal workers")
    args = parser.parse_args(argv)
    for name in (args.unlabeled, args.labeled, args.val):
        if not ensure_subset_registered(name):
            parser.error(f"dataset {name!r} is not registered")
    os.makedirs(args.output_dir, exist_ok=True)
    torch.set_num_threads(1)  # tiny models on shared cores: a second thread mostly spin-waits

    settings = SearchSettings(search_size=args.search_size)
    proposal_file = os.path.abspath(
        os.path.join(args.output_dir, f"{args.unlabeled}_soco{args.search_size or ''}.json")
    )
    start = time.perf_counter()
    stats = proposals(args.unlabeled, proposal_file, settings, args.workers)
    stats["seconds"] = time.perf_counter() - start
    print("proposals: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))

    per_seed = {seed: run_seed(args, seed, proposal_file) for seed in args.seeds}
    lines = summarize(per_seed, args.arms)
    print("\n".join(lines))
    with atomic_write(os.path.join(args.output_dir, "results.json")) as f:
        json.dump({"args": vars(args), "proposals": stats, "per_seed": per_seed, "summary": lines}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
