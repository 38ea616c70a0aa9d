#!/usr/bin/env python
"""Train or evaluate a detector with detpre's components through Detectron2's launcher.

    python tools/train_net.py --config-file configs/Demo/faster_rcnn_R18_FPN_scratch.yaml MODEL.DEVICE cpu
    python tools/train_net.py --config-file CFG --schedule 6x SOLVER.IMS_PER_BATCH 64 --num-gpus 8
    python tools/train_net.py --config-file CFG --dry-run      # print the resolved config
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth TEST.AUG.ENABLED True

With ``TEST.AUG.ENABLED`` every evaluation (``--eval-only``, periodic, final) also runs with
Detectron2's test-time augmentation; its results are the plain ones' names plus "_TTA".
"""
import sys

from detectron2.engine import default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import detpre  # noqa: F401  (registers detpre's components)
from detpre.checkpoint import DetpreCheckpointer
from detpre.engine.defaults import check_device, detpre_argument_parser, setup_cfg
from detpre.engine.trainer import DetpreTrainer


def main(args):
    cfg = setup_cfg(args)
    check_device(cfg)
    default_setup(cfg, args)
    if args.eval_only:
        model = DetpreTrainer.build_model(cfg)
        DetpreCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = DetpreTrainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(DetpreTrainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = DetpreTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None) -> None:
    args = detpre_argument_parser().parse_args(argv)
    if args.dry_run:
        # Resolve in this process only: no data, no model, no workers.
        sys.stdout.write(setup_cfg(args).dump())
        return
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
