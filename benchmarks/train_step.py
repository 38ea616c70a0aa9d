#!/usr/bin/env python
"""Training throughput of stock Detectron2 and of detpre's training path, switch by switch.

    python benchmarks/train_step.py                        # on a GPU: the whole ladder
    python benchmarks/train_step.py --device cpu --iters 2 --ims-per-batch 1 --rungs detectron2 "detpre fp32"

The model is R50-FPN GN Mask R-CNN from scratch. The first rung is Detectron2 alone: its
``Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml`` built by ``build_model`` and stepped by its
``SimpleTrainer``. Every later rung is detpre's equivalent config
(``configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml``) through detpre's training
path (``DetpreTrainer.build_model`` and ``build_step_trainer``), each adding one speed switch
to the one before (``RUNGS``), so the table says what each switch buys.

Every rung runs in a fresh process (its own peak memory, cuDNN and compile caches) from the
same initial weights, on the same synthetic COCO-like batch (800x1333 images with 3-6 boxes
and polygon masks each). It first runs ``--check-iters`` iterations, gathering the losses of
each, printed beside those of "detpre fp32" (they must match within AMP noise; Detectron2's
rung differs in its input scaling, PIXEL_STD, and so in its losses, not its cost), then
``--warmup`` iterations, then ``--iters`` timed ones, then one more in which it counts the
operations that make the host wait for the GPU (``torch.cuda.set_sync_debug_mode``; an
iteration that gathers the losses adds one per loss, so with ``SOLVER.GATHER_METRIC_PERIOD``
20 the count is that of the 19 iterations in 20 that do not).
Prints s/iter, images/s, peak memory and the ratio to Detectron2, all from this run.
"""

import argparse
import copy
import multiprocessing
import resource
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Sequence, Tuple

import detectron2
import numpy as np
import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import DefaultTrainer, HookBase, SimpleTrainer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks

import detpre
from detpre.engine.train_loop import build_step_trainer
from detpre.engine.trainer import DetpreTrainer

DETPRE_CONFIG = "configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml"
STOCK_CONFIG = "Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml"
# (rung, the config keys it sets on top of the rung before). "detectron2" is stock Detectron2.
RUNGS: List[Tuple[str, List[str]]] = [
    ("detectron2", []),
    ("detpre fp32", ["SOLVER.AMP.ENABLED", "False"]),
    ("+ AMP (auto precision)", ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "auto"]),
    ("+ gather losses every 20", ["SOLVER.GATHER_METRIC_PERIOD", "20"]),
    ("+ cudnn.benchmark", ["CUDNN_BENCHMARK", "True"]),
    ("+ channels-last", ["MODEL.CHANNELS_LAST", "True"]),
    ("+ compiled backbone", ["MODEL.BACKBONE.COMPILE", "default"]),
]


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


def repeat(batch: List[Dict]) -> Iterator[List[Dict]]:
    """A data loader that yields a fresh copy of the same batch forever."""
    while True:
        yield copy.deepcopy(batch)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_mb(device: str) -> float:
    """Peak GPU memory since the last reset, or the process's peak RSS on the CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class Measurement:
    seconds: float = float("nan")  # per timed iteration
    peak_mb: float = float("nan")
    losses: List[float] = field(default_factory=list)  # total loss of each check iteration
    syncs: int = -1  # host-device synchronisations in one step (CUDA only)


class StepClock(HookBase):
    """Gathers the total loss of the first ``check`` iterations, times ``iters`` iterations
    after ``warmup`` more, and counts the host-device syncs of the one iteration after them."""

    def __init__(self, check: int, warmup: int, iters: int, device: str):
        self.check, self.warmup, self.iters, self.device = check, warmup, iters, device
        self.result = Measurement()
        self._period = 1
        self._caught = None

    def before_train(self):
        self._period = self.trainer.gather_metric_period
        self.trainer.gather_metric_period = 1 if self.check else self._period

    def before_step(self):
        it = self.trainer.iter
        if it == self.check:
            self.trainer.gather_metric_period = self._period
        if it == self.check + self.warmup:
            synchronize(self.device)
            if self.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            self._start = time.perf_counter()
        if it == self.check + self.warmup + self.iters:
            synchronize(self.device)
            self.result.seconds = (time.perf_counter() - self._start) / self.iters
            self.result.peak_mb = peak_memory_mb(self.device)
            if self.device.startswith("cuda"):
                self._caught = warnings.catch_warnings(record=True)
                self._records = self._caught.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")

    def after_step(self):
        if self._caught is not None:
            synchronize(self.device)
            torch.cuda.set_sync_debug_mode("default")
            self._caught.__exit__(None, None, None)
            self.result.syncs = sum("synchroniz" in str(r.message) for r in self._records)
            self._caught = None

    def after_train(self):
        history = self.trainer.storage.histories().get("total_loss")
        if history is not None:
            self.result.losses = [v for v, it in history.values() if it < self.check]


def time_steps(trainer: SimpleTrainer, iters: int, warmup: int, device: str, check: int = 0) -> Measurement:
    """Run ``check + warmup + iters + 1`` iterations of ``trainer`` and measure them (StepClock)."""
    clock = StepClock(check, warmup, iters, device)
    trainer.register_hooks([clock])
    try:
        trainer.train(0, check + warmup + iters + 1)
    finally:
        trainer._hooks.remove(clock)
    return clock.result


def detpre_cfg(config: str, device: str, opts: Sequence[str] = ()) -> CfgNode:
    cfg = get_cfg()
    detpre.add_detpre_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", device, *opts])
    return cfg


def detpre_trainer(cfg: CfgNode, batch: List[Dict]) -> SimpleTrainer:
    """detpre's training path for ``cfg``: its model build (from seed 0) and its step trainer."""
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK  # what default_setup does in train_net
    torch.manual_seed(0)
    model = DetpreTrainer.build_model(cfg)
    return build_step_trainer(cfg, model, repeat(batch), DetpreTrainer.build_optimizer(cfg, model))


def stock_cfg(device: str) -> CfgNode:
    cfg = model_zoo.get_config(STOCK_CONFIG)
    cfg.MODEL.DEVICE = device
    return cfg


def run_rung(rung: int, args: argparse.Namespace, init: str) -> Measurement:
    """One rung of the ladder, in its own process: build, load the shared init, measure."""
    batch = synthetic_batch(args.ims_per_batch, args.height, args.width)
    if RUNGS[rung][0] == "detectron2":
        cfg = stock_cfg(args.device)
        model = build_model(cfg)
        trainer = SimpleTrainer(model, repeat(batch), DefaultTrainer.build_optimizer(cfg, model))
    else:
        opts = [*args.opts, *(o for _, rung_opts in RUNGS[1 : rung + 1] for o in rung_opts)]
        trainer = detpre_trainer(detpre_cfg(args.config, args.device, opts), batch)
    state = trainer.model.state_dict()
    with torch.no_grad():  # copy_ keeps each parameter's memory format
        for name, value in torch.load(init).items():
            state[name].copy_(value)
    torch.manual_seed(args.seed)
    return time_steps(trainer, args.iters, args.warmup, args.device, check=args.check_iters)


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training-step benchmark shares."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ims-per-batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument(
        "--opts", nargs="+", default=[], metavar="KEY VALUE", help="config overrides of every detpre side"
    )


def print_environment(args: argparse.Namespace) -> None:
    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"device={device} torch={torch.__version__} detectron2={detectron2.__version__} "
        f"batch={args.ims_per_batch} size={args.height}x{args.width}"
    )


def compare_in_rounds(trainers: Dict[str, SimpleTrainer], baseline: str, rounds: int, args: argparse.Namespace) -> None:
    """Time every side ``rounds`` times, interleaved so that machine load hits all alike, and
    print each side's best s/iter, images/s and ratio to ``baseline``."""
    times: Dict[str, List[float]] = {side: [] for side in trainers}
    for _ in range(rounds):
        for side, trainer in trainers.items():
            times[side].append(time_steps(trainer, args.iters, args.warmup, args.device).seconds)
    best = {side: min(t) for side, t in times.items()}
    for side, seconds in best.items():
        print(
            f"{side:>30}: {seconds:.3f} s/iter, {args.ims_per_batch / seconds:.3f} images/s, "
            f"ratio to {baseline} {seconds / best[baseline]:.2f}"
        )
    print_environment(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser)
    names = [name for name, _ in RUNGS]
    parser.add_argument(
        "--rungs",
        nargs="+",
        default=names,
        choices=names,
        metavar="RUNG",
        help=f"rungs to run (each includes the switches of the rungs before it): {names}",
    )
    parser.add_argument("--check-iters", type=int, default=3, help="iterations whose losses are compared")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=DETPRE_CONFIG, help="detpre's config for the same model")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        init = f"{tmp}/init.pth"
        torch.manual_seed(args.seed)
        torch.save(build_model(stock_cfg("cpu")).state_dict(), init)
        results: Dict[str, Measurement] = {}
        for rung, name in enumerate(names):
            if name in args.rungs:
                # A fresh process per rung, so that peak memory and the cuDNN/compile caches
                # are its own; not a multiprocessing.Pool, whose daemonic workers cannot start
                # inductor's compile workers.
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    results[name] = pool.submit(run_rung, rung, args, init).result()
    base = results[args.rungs[0]]
    # Losses are compared with detpre's full-precision rung: Detectron2's config feeds the
    # network pixels not divided by the ImageNet std (PIXEL_STD 1), detpre's does.
    reference = results.get("detpre fp32", base)
    print(
        f"{'rung':>28} | s/iter | images/s | vs {args.rungs[0]} | peak MiB | syncs/step | "
        f"losses of the first {args.check_iters} iterations (max rel. diff to detpre fp32)"
    )
    for name, m in results.items():
        diff = max((abs(a - b) / abs(b) for a, b in zip(m.losses, reference.losses)), default=float("nan"))
        print(
            f"{name:>28} | {m.seconds:6.3f} | {args.ims_per_batch / m.seconds:8.2f} | "
            f"{base.seconds / m.seconds:8.2f}x | {m.peak_mb:8.0f} | {m.syncs:10d} | "
            f"{' '.join(f'{v:.4f}' for v in m.losses)} ({diff:.4f})"
        )
    print_environment(args)


if __name__ == "__main__":
    main()
