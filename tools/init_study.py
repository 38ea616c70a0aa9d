#!/usr/bin/env python
"""Train one detector from several initializations for several schedules, and compare them.

    python tools/init_study.py --config-file configs/COCO-Scratch/mask_rcnn_R_50_FPN_6x_gn_scratch.yaml \
        --init scratch=scratch \
        --init imagenet=catalog://ImageNetPretrained/FAIR/R-50-GN \
        --init-config imagenet=configs/COCO-Scratch/mask_rcnn_R_50_FPN_3x_gn_imagenet.yaml \
        --init tv_r50=resnet50-0676ba61.pth --init-opts tv_r50 MODEL.BACKBONE.NAME build_resnet_fpn_backbone \
            MODEL.RESNETS.NORM FrozenBN MODEL.BACKBONE.FREEZE_AT 2 \
        --init boxdomain=output/aligndet_r50/model_final.pth \
        --schedules 1x 2x 4x 6x --output-dir output/init_study --num-gpus 8 \
        --opts DATASETS.TRAIN "('coco_2017_train_10k_s0',)"

Each ``--init NAME=SPEC`` is a row: SPEC is ``scratch`` (no weights: the config's own
from-scratch settings) or a checkpoint path / URL: a Detectron2 ``.pkl``/``.pth`` (model-zoo
ImageNet or COCO weights, a box-domain pre-trained detpre checkpoint, any detector), or a
torchvision / timm ResNet state dict, converted on the fly (with the RGB / ImageNet-statistics
/ depth settings it needs). Each ``--schedules`` entry is a column: a multiple of
``SOLVER.SCHEDULE`` (``1x``, ``6x``, ``0.25x`` for small data sets).

Per-initialization settings: ``--init-opts NAME KEY VALUE ...`` adds overrides after the
study's ``--opts``, and ``--init-config NAME=FILE`` replaces ``--config-file`` for that
initialization (best with ``_BASE_`` the same base, so that only the initialization differs;
the SPEC replaces the file's ``MODEL.WEIGHTS``). Fine-tuning BN-trained ImageNet weights
usually means Detectron2's ``build_resnet_fpn_backbone`` with ``MODEL.RESNETS.NORM FrozenBN``
and ``MODEL.BACKBONE.FREEZE_AT 2`` (detpre's scratch backbone refuses both); a GN config
fine-tunes GN-trained weights as is.

Every run is ``tools/train_net.py`` in its own process and folder ``<output-dir>/<init>_<schedule>``
(launcher flags ``--num-gpus`` etc. are passed on). Running the same command again skips
finished runs and resumes interrupted ones; ``--dry-run`` lists the runs and their commands;
``--report-only`` rewrites the table and plot from what has finished. The study ends with
``init_study.md`` / ``.csv`` / ``.json`` (the final ``--metric`` of every run; rows:
initializations, columns: schedules) and ``init_study.png``: every run's curve against the
images seen, so that schedules and batch sizes compare. Exits 1 if any run did not finish.
"""

import argparse
import os
import sys
from typing import Dict, List, Optional

from detpre.analysis.init_study import (
    Init,
    InitStudy,
    check_name,
    markdown_table,
    plan_summary,
    plot_study,
    write_results,
)
from detpre.utils.cli import cli_main

TRAIN_NET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the config of every run")
    parser.add_argument(
        "--init",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        required=True,
        help="an initialization: NAME=scratch or NAME=checkpoint path/URL (repeat for each)",
    )
    parser.add_argument(
        "--init-config",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a config file that replaces --config-file for initialization NAME",
    )
    parser.add_argument(
        "--init-opts",
        action="append",
        default=[],
        nargs="+",
        metavar="NAME KEY VALUE",
        help="KEY VALUE overrides for initialization NAME only, after --opts",
    )
    parser.add_argument(
        "--schedules",
        nargs="+",
        required=True,
        metavar="KX",
        help="schedules to run, e.g. 1x 2x 4x 6x or 0.25x 0.5x 1x",
    )
    parser.add_argument("--output-dir", required=True, help="study folder: one sub-folder per run, table, plot")
    parser.add_argument(
        "--metric",
        default="bbox/AP",
        help="metrics.json key of the table and curves (default bbox/AP; e.g. a KAIST MR key)",
    )
    parser.add_argument(
        "--opts",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY VALUE",
        help="config overrides of every run (Detectron2 KEY VALUE pairs)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their commands; train nothing")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the table and plot from the runs that have finished; train nothing",
    )
    launcher = parser.add_argument_group("passed on to tools/train_net.py")
    launcher.add_argument("--num-gpus", type=int, help="GPUs (processes) per machine")
    launcher.add_argument("--num-machines", type=int, help="machines per run")
    launcher.add_argument("--machine-rank", type=int, help="this machine's rank")
    launcher.add_argument("--dist-url", help="initialization URL for distributed training")
    return parser


def launcher_args(args: argparse.Namespace) -> List[str]:
    """The launcher flags given on the command line, as train_net.py arguments."""
    out: List[str] = []
    for flag in ("num_gpus", "num_machines", "machine_rank", "dist_url"):
        value = getattr(args, flag)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    return out


def build_inits(args: argparse.Namespace) -> List[Init]:
    """``--init`` entries with their ``--init-config`` and ``--init-opts`` attached."""
    inits = [Init.parse(entry) for entry in args.init]
    known = {i.name for i in inits}
    configs: Dict[str, str] = {}
    for entry in args.init_config:
        name, sep, path = entry.partition("=")
        if not sep or not path:
            raise ValueError(f"--init-config {entry!r}: expected NAME=FILE")
        configs[name] = path
    opts: Dict[str, List[str]] = {}
    for name, *pairs in args.init_opts:
        opts.setdefault(name, []).extend(pairs)
    for flag, names in (("--init-config", configs), ("--init-opts", opts)):
        for name in names:
            check_name(name, flag)
            if name not in known:
                raise ValueError(f"{flag} {name}: no --init is named {name!r} (known: {sorted(known)})")
    return [Init(i.name, i.spec, configs.get(i.name, ""), tuple(opts.get(i.name, ()))) for i in inits]


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    study = InitStudy(
        args.config_file,
        build_inits(args),
        args.schedules,
        args.output_dir,
        opts=args.opts,
        metric=args.metric,
        launcher_args=launcher_args(args),
    )
    plans = study.plan()
    if args.dry_run:
        sys.stdout.write(plan_summary(plans, TRAIN_NET))
        return 0
    try:
        cells = study.collect(plans) if args.report_only else study.run(TRAIN_NET, plans)
    except KeyboardInterrupt:
        print("interrupted: the run in progress saved a checkpoint; run the same command to resume", file=sys.stderr)
        return 130
    inits = [i.name for i in study.inits]
    paths = write_results(cells, inits, study.schedules, study.metric, study.output_dir)
    png = plot_study(cells, os.path.join(study.output_dir, "init_study.png"))
    if png:
        paths["png"] = png
    print()
    print(markdown_table(cells, inits, study.schedules, study.metric), end="")
    print("\n" + "\n".join(f"written: {p}" for p in paths.values()))
    unfinished = [c for c in cells if c.status != "done"]
    for c in unfinished:
        print(f"{c.init}_{c.schedule}: {c.status}" + (f": {c.error}" if c.error else ""), file=sys.stderr)
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
