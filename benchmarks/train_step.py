#!/usr/bin/env python
"""Time training iterations of stock Detectron2 and detpre on the same model and inputs.

    python benchmarks/train_step.py --device cpu --iters 3 --ims-per-batch 1

Both sides train R50-FPN GN Mask R-CNN from scratch: Detectron2's own
``Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml`` built by Detectron2 alone, and detpre's
equivalent config built by ``DetpreTrainer.build_model``. Inputs are synthetic COCO-like
batches (800x1333 images, a few boxes with polygon masks each), identical for both, so
the figure measures the model path only. Prints seconds per iteration, images/s, peak
memory and the ratio detpre / Detectron2 (taken in the same run).
"""
import argparse
import copy
import multiprocessing
import resource
import time
from typing import Dict, List, Tuple

import numpy as np
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

import detpre
from detpre.engine.trainer import DetpreTrainer

DETPRE_CONFIG = "configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml"


def synthetic_batch(n: int, height: int, width: int, seed: int = 0) -> List[Dict]:
    """COCO-like training inputs: textured images with 3-6 boxes and polygon masks each."""
    rng = np.random.default_rng(seed)
    batch = []
    for _ in range(n):
        image = torch.from_numpy(rng.integers(0, 255, (3, height, width), dtype=np.uint8))
        k = int(rng.integers(3, 7))
        x0 = rng.uniform(0, width * 0.7, k)
        y0 = rng.uniform(0, height * 0.7, k)
        w = rng.uniform(32, width * 0.3, k)
        h = rng.uniform(32, height * 0.3, k)
        boxes = np.stack([x0, y0, x0 + w, y0 + h], axis=1)
        polygons = [[[b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]]] for b in boxes]
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor(rng.integers(0, 80, k))
        inst.gt_masks = PolygonMasks(polygons)
        batch.append({"image": image, "instances": inst, "height": height, "width": width})
    return batch


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_training(model: torch.nn.Module, batch: List[Dict], iters: int, warmup: int, device: str) -> float:
    """Seconds per iteration (forward, backward, SGD step), after ``warmup`` iterations."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()

    def step():
        losses = model(copy.deepcopy(batch))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    with EventStorage():  # Detectron2's heads log to it
        for _ in range(warmup):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(iters):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / iters


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training-step benchmark shares."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ims-per-batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)


def compare_in_rounds(
    models: Dict[str, torch.nn.Module], inputs: Dict[str, List[Dict]], baseline: str, rounds: int, args: argparse.Namespace
) -> None:
    """Time every side ``rounds`` times, interleaved so that machine load hits all alike, and
    print each side's best s/iter, images/s and ratio to ``baseline``."""
    times: Dict[str, List[float]] = {side: [] for side in models}
    for _ in range(rounds):
        for side, model in models.items():
            times[side].append(time_training(model, inputs[side], args.iters, args.warmup, args.device))
    best = {side: min(t) for side, t in times.items()}
    for side, seconds in best.items():
        print(f"{side:>30}: {seconds:.3f} s/iter, {args.ims_per_batch / seconds:.3f} images/s, "
              f"ratio to {baseline} {seconds / best[baseline]:.2f}")
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"batch={args.ims_per_batch} size={args.height}x{args.width}")


def stock_model(device: str) -> torch.nn.Module:
    cfg = model_zoo.get_config("Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml")
    cfg.MODEL.DEVICE = device
    return build_model(cfg)


def detpre_model(device: str, config: str) -> torch.nn.Module:
    cfg = get_cfg()
    detpre.add_detpre_config(cfg)
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = device
    return DetpreTrainer.build_model(cfg)


def measure(side: str, args: argparse.Namespace) -> Tuple[float, int, float]:
    """(seconds per iteration, parameter count, peak memory in MiB) of one side."""
    torch.manual_seed(0)
    model = stock_model(args.device) if side == "detectron2" else detpre_model(args.device, args.config)
    batch = synthetic_batch(args.ims_per_batch, args.height, args.width)
    seconds = time_training(model, batch, args.iters, args.warmup, args.device)
    return seconds, sum(p.numel() for p in model.parameters()), peak_memory_mb(args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--config", default=DETPRE_CONFIG, help="detpre's config for the same model")
    args = parser.parse_args()

    results = {}
    # Each side runs in a fresh process, so that peak memory is its own.
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for side in ("detectron2", "detpre"):
            seconds, params, peak = pool.apply(measure, (side, args))
            results[side] = seconds
            print(
                f"{side:>10}: {seconds:.3f} s/iter, {args.ims_per_batch / seconds:.3f} images/s, "
                f"{params / 1e6:.2f}M params, peak memory {peak:.0f} MiB"
            )
    print(f"ratio detpre/detectron2 images/s: {results['detectron2'] / results['detpre']:.3f}")
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"batch={args.ims_per_batch} size={args.height}x{args.width}")


if __name__ == "__main__":
    main()
