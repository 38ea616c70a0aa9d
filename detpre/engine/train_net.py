"""``tools/train_net.py``: train or evaluate a detector with detpre's components through
Detectron2's launcher.

    python tools/train_net.py --config-file configs/Demo/faster_rcnn_R18_FPN_scratch.yaml MODEL.DEVICE cpu
    python tools/train_net.py --config-file CFG --schedule 6x SOLVER.IMS_PER_BATCH 64 --num-gpus 8
    python tools/train_net.py --config-file CFG --dry-run      # print the resolved config
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth

The config is resolved before any process is started (a bad key fails at once), then again
in every training process, which registers the same dataset subsets. ``--eval-only``
refuses weights that leave part of the model at its initialization
(``TEST.MAX_UNLOADED_WEIGHTS``).
"""

import argparse
import sys
from typing import Any, Optional, Sequence

from detectron2.engine import launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ..checkpoint import DetpreCheckpointer
from ..checkpoint.load_report import check_loaded
from ..utils.cli import EXIT_OK, cli_main
from .defaults import check_device, detpre_argument_parser, detpre_setup, resolve_args
from .trainer import DetpreTrainer

__all__ = ["main", "run"]


def evaluate(cfg, resume: bool) -> Any:
    """``--eval-only``: the model, its weights checked, evaluated on ``DATASETS.TEST``."""
    model = DetpreTrainer.build_model(cfg)
    checkpointer = DetpreCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    check_loaded(checkpointer.load_report, model.state_dict().keys(), cfg.MODEL.WEIGHTS, cfg.TEST.MAX_UNLOADED_WEIGHTS)
    results = DetpreTrainer.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        results.update(DetpreTrainer.test_with_TTA(cfg, model))
    if comm.is_main_process():
        verify_results(cfg, results)
    return results


def run(args: argparse.Namespace) -> Any:
    """One process of the run (Detectron2's ``launch`` target)."""
    resolved = resolve_args(args)
    resolved.cfg.freeze()
    detpre_setup(resolved, args)
    if args.eval_only:
        return evaluate(resolved.cfg, args.resume)
    trainer = DetpreTrainer(resolved.cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = detpre_argument_parser().parse_args(argv)
    resolved = resolve_args(args)
    if args.dry_run:
        # Resolve in this process only: no data, no model, no workers.
        sys.stdout.write(resolved.commented_dump())
        return EXIT_OK
    check_device(resolved.cfg)
    try:
        launch(
            run,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except SystemExit as e:  # a signal stopped training after its checkpoint: 128 + signal
        return e.code if isinstance(e.code, int) else EXIT_OK
    return EXIT_OK
