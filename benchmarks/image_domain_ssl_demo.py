#!/usr/bin/env python
"""Toy-scale evidence for image-domain self-supervised pre-training, on the demo data.

    python benchmarks/image_domain_ssl_demo.py --seeds 0 1 2 3 4 --output-dir output/ssl_demo_benchmark

For each seed s (every run seeded with s; one intra-op thread, the loader in the main
process, which on 2 shared cores is both faster and steadier than two threads):

1. **pre-training**: ``configs/Demo/image_domain_mocov2_R18_FPN.yaml`` (``--method densecl``:
   the DenseCL twin) on the 1000 unlabeled ``detpre_demo_train`` images (``--unlabeled``), then its backbone
   weights (:func:`detpre.modeling.meta_arch.image_domain_weights.image_domain_to_backbone`,
   what ``tools/convert_pretrained.py`` writes);
2. **fine-tuning** ``configs/Demo/faster_rcnn_R18_FPN_mocov2.yaml`` (100 labeled images,
   ``--labeled``) and COCO AP on the 100 val images (``--val``), in three arms of the same
   config, data and seed:
   (a) from the pre-trained backbone, (b) from random init with the same iterations,
   (c) from random init with the iterations extended by the pre-training's cost: the
   pre-training's wall time divided by arm (b)'s seconds per iteration, both measured in
   the first seed's run and then used for every seed;
3. **linear probe** (:func:`detpre.analysis.probe.run_probe`) of pooled res4 / res5 features
   of the pre-trained backbone and of the random init (the same seed's), on crops of the
   demo objects in grey (4 shapes): trained on crops of 200 unlabeled images, tested on the
   crops of 100 val images.

Prints a per-seed table with mean and standard deviation and the paired differences, and
writes everything to ``OUTPUT_DIR/results.json``. A run is resumable per arm (finished arms
are read back from ``OUTPUT_DIR``).
"""

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import cv2
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from detpre import add_detpre_config
from detpre.analysis.probe import run_probe
from detpre.checkpoint.reading import read_model_state
from detpre.data.datasets.subsets import ensure_subset_registered
from detpre.engine.trainer import DetpreTrainer
from detpre.modeling.meta_arch.image_domain_weights import image_domain_to_backbone
from detpre.utils.file_io import atomic_write, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = {
    "moco_v2": os.path.join(REPO, "configs", "Demo", "image_domain_mocov2_R18_FPN.yaml"),
    "densecl": os.path.join(REPO, "configs", "Demo", "image_domain_densecl_R18_FPN.yaml"),
}
FINETUNE = os.path.join(REPO, "configs", "Demo", "faster_rcnn_R18_FPN_mocov2.yaml")
STAGES = ("res4", "res5")


def config(path: str, seed: int, output_dir: str, opts: Sequence[str] = ()) -> CfgNode:
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "SEED", str(seed), "OUTPUT_DIR", output_dir, "DATALOADER.NUM_WORKERS", "0", *opts]
    )
    cfg.freeze()
    return cfg


def train(cfg: CfgNode) -> DetpreTrainer:
    seed_all_rng(cfg.SEED)
    trainer = DetpreTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def pretrain(method: str, seed: int, out: str, opts: Sequence[str]) -> Dict[str, Any]:
    """Pre-train, write ``backbone.pth``; its wall time and last health signals."""
    done = os.path.join(out, "pretrain.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    cfg = config(PRETRAIN[method], seed, out, opts)
    start = time.perf_counter()
    trainer = train(cfg)
    seconds = time.perf_counter() - start
    weights, report = image_domain_to_backbone(read_model_state(os.path.join(out, "model_final.pth")))
    backbone = os.path.join(out, "backbone.pth")
    with atomic_write(backbone, "wb") as f:
        torch.save({"model": weights, "__author__": "detpre ImageDomainPretrainer"}, f)
    health = {k: v[0] for k, v in trainer.storage.latest().items() if k.startswith(("image_domain/", "loss"))}
    result = {"seconds": seconds, "iters": cfg.SOLVER.MAX_ITER, "backbone": backbone, "last": health}
    with atomic_write(done) as f:
        json.dump(result, f, indent=1)
    return result


def stretched_schedule(cfg: CfgNode, max_iter: int) -> List[str]:
    """Overrides that run ``cfg``'s schedule over ``max_iter`` iterations, its LR drops at the
    same fractions of the run (warm-up unchanged)."""
    scale = max_iter / cfg.SOLVER.MAX_ITER
    steps = tuple(int(round(s * scale)) for s in cfg.SOLVER.STEPS)
    return ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", str(steps)]


def finetune(
    weights: str, seed: int, out: str, max_iter: Optional[int], opts: Sequence[str], val: str
) -> Dict[str, Any]:
    """Fine-tune (``max_iter`` None: the config's), then COCO AP on ``val``."""
    done = os.path.join(out, "finetune.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    extra = ["MODEL.WEIGHTS", weights, "DATASETS.TEST", "()", *opts]
    if max_iter is not None:
        extra += stretched_schedule(config(FINETUNE, seed, out, opts), max_iter)
    cfg = config(FINETUNE, seed, out, extra)
    start = time.perf_counter()
    trainer = train(cfg)
    seconds = time.perf_counter() - start
    evaluation = cfg.clone()
    evaluation.defrost()
    evaluation.DATASETS.TEST = (val,)
    bbox = DetpreTrainer.test(evaluation, trainer.model)["bbox"]
    result = {"seconds": seconds, "iters": cfg.SOLVER.MAX_ITER, "AP": bbox["AP"], "AP50": bbox["AP50"]}
    with atomic_write(done) as f:
        json.dump(result, f, indent=1)
    return result


def crop_folder(dataset: str, root: str, max_images: int, size: int = 64) -> str:
    """``root/<class>/<n>.png``: each object of the first ``max_images`` images of ``dataset``,
    a square around its box with a quarter of context, resized to ``size``, in grey: each demo
    class has its own hue band, which alone separates the classes (any features do), so the
    probe is left the shapes."""
    if os.path.isdir(root):
        return root
    classes = MetadataCatalog.get(dataset).thing_classes
    tmp = root + ".tmp"
    for name in classes:
        os.makedirs(os.path.join(tmp, name), exist_ok=True)
    count = 0
    for record in DatasetCatalog.get(dataset)[:max_images]:
        image = cv2.imread(record["file_name"])
        height, width = image.shape[:2]
        for annotation in record["annotations"]:
            x, y, w, h = annotation["bbox"]  # XYWH_ABS in the demo's COCO json
            side = 1.25 * max(w, h)
            cx, cy = x + w / 2, y + h / 2
            x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            x1, y1 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
            crop = cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
            crop = cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
            write_image(os.path.join(tmp, classes[annotation["category_id"]], f"{count:05d}.png"), crop)
            count += 1
    os.rename(tmp, root)
    return root


def probe(weights: str, seed: int, train_folder: str, test_folder: str) -> Dict[str, float]:
    """Test top-1 of the linear probe of each stage (``weights`` "": the seed's random init)."""
    cfg = config(FINETUNE, seed, "", ["MODEL.WEIGHTS", weights])
    torch.manual_seed(seed)  # the random init of "" is the seed's
    results = run_probe(cfg, weights, train_folder, STAGES, None, test_data=test_folder, size=64, seed=seed)
    return {stage: results[stage].top1 for stage in STAGES}


def summary(values: List[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.2f} ± {spread:5.2f}"


def report(results: Dict[str, Any]) -> str:
    """The per-seed table (markdown), with mean ± standard deviation and paired differences."""
    seeds = sorted(results["seeds"], key=int)
    rows = [
        ("AP, (a) pre-trained", lambda r: r["pretrained"]["AP"]),
        ("AP, (b) random init, same iterations", lambda r: r["random"]["AP"]),
        ("AP, (c) random init, compute-matched", lambda r: r["matched"]["AP"]),
        ("AP50, (a) pre-trained", lambda r: r["pretrained"]["AP50"]),
        ("AP50, (b) random init, same iterations", lambda r: r["random"]["AP50"]),
        ("AP50, (c) random init, compute-matched", lambda r: r["matched"]["AP50"]),
        ("AP (a) - (b)", lambda r: r["pretrained"]["AP"] - r["random"]["AP"]),
        ("AP (a) - (c)", lambda r: r["pretrained"]["AP"] - r["matched"]["AP"]),
    ]
    for stage in STAGES:
        rows += [
            (f"probe top-1 %, {stage}, pre-trained", lambda r, s=stage: 100 * r["probe_pretrained"][s]),
            (f"probe top-1 %, {stage}, random init", lambda r, s=stage: 100 * r["probe_random"][s]),
        ]
    lines = [
        "| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for label, get in rows:
        values = [get(results["seeds"][s]) for s in seeds]
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {summary(values)} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--method", choices=sorted(PRETRAIN), default="moco_v2")
    parser.add_argument("--output-dir", default="output/ssl_demo_benchmark")
    parser.add_argument("--unlabeled", default="detpre_demo_train", help="pre-training images (labels ignored)")
    parser.add_argument("--labeled", default="detpre_demo_train_100_s0", help="fine-tuning dataset")
    parser.add_argument("--val", default="detpre_demo_val", help="evaluation dataset")
    parser.add_argument("--pretrain-opts", nargs="*", default=[], help="KEY VALUE overrides of the pre-training")
    parser.add_argument("--finetune-opts", nargs="*", default=[], help="KEY VALUE overrides of the fine-tuning")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    setup_logger(name="detectron2")  # progress of every run (the trainer then adds no second handler)
    setup_logger(name="detpre")
    out = os.path.abspath(args.output_dir)
    for name in (args.unlabeled, args.labeled, args.val):
        if not ensure_subset_registered(name):
            parser.error(f"dataset {name!r} is not registered (nor a subset name of a registered one)")
    pretrain_opts = ["DATASETS.TRAIN", f"('{args.unlabeled}',)", *args.pretrain_opts]
    finetune_opts = ["DATASETS.TRAIN", f"('{args.labeled}',)", *args.finetune_opts]
    train_folder = crop_folder(args.unlabeled, os.path.join(out, "probe_train"), 200)
    test_folder = crop_folder(args.val, os.path.join(out, "probe_test"), 100)
    results: Dict[str, Any] = {"method": args.method, "seeds": {}}
    extra_iters = None
    for seed in args.seeds:
        run = os.path.join(out, f"seed{seed}")
        pre = pretrain(args.method, seed, os.path.join(run, "pretrain"), pretrain_opts)
        row = {"pretrain": pre}
        row["pretrained"] = finetune(
            pre["backbone"], seed, os.path.join(run, "pretrained"), None, finetune_opts, args.val
        )
        row["random"] = finetune("", seed, os.path.join(run, "random"), None, finetune_opts, args.val)
        if extra_iters is None:  # the first seed's measured costs fix the matching for every seed
            seconds_per_iter = row["random"]["seconds"] / row["random"]["iters"]
            extra_iters = int(round(pre["seconds"] / seconds_per_iter))
            results["compute_matching"] = {
                "pretrain_seconds": pre["seconds"],
                "finetune_seconds_per_iter": seconds_per_iter,
                "extra_iters": extra_iters,
                "measured_on_seed": seed,
            }
        matched_iters = row["random"]["iters"] + extra_iters
        row["matched"] = finetune("", seed, os.path.join(run, "matched"), matched_iters, finetune_opts, args.val)
        row["probe_pretrained"] = probe(pre["backbone"], seed, train_folder, test_folder)
        row["probe_random"] = probe("", seed, train_folder, test_folder)
        results["seeds"][str(seed)] = row
        with atomic_write(os.path.join(out, "results.json")) as f:
            json.dump(results, f, indent=1)
        print(f"seed {seed}: {json.dumps({k: v for k, v in row.items() if k != 'pretrain'})}", flush=True)
    print(json.dumps(results["compute_matching"]))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
