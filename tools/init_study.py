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

A study with pre-training stages (the target-only chain: image-domain SSL -> box-domain ->
fine-tuning) is written down in a study file (``--study``, see configs/KAIST/init_study.yaml
and detpre.analysis.study_spec): its rows may say ``stage:NAME``, a stage the study trains
once in ``<output-dir>/pretrain/NAME`` and converts with tools/convert_pretrained.py for each
row or stage that starts from it. Flags given beside ``--study`` add to it or replace its
values. ``--metric`` may be given several times (``kaist/MR_all``, ``kaist/MR_day``,
``kaist/MR_night``): one table, the first metric's curves on the figure.

``--launcher local`` (the default) runs the jobs one after another here; ``slurm`` submits
each job whose prerequisites are done to SLURM through submitit (``--submitit KEY=VALUE``:
submitit's parameters, e.g. ``timeout_min=4320 slurm_partition=learnfair``), and
``submitit-local`` does the same with submitit's local executor. The submitted jobs are
recorded in ``<output-dir>/jobs.json``; run the same command again to submit what became ready
and to build the table from what has finished, or give ``--wait`` to keep doing so until
every job has ended.
"""

import argparse
import os
import sys
from typing import List, Optional

from detpre.analysis.init_study import InitStudy, markdown_table, plan_summary, plot_study, stages_table, write_results
from detpre.analysis.study_jobs import LAUNCHERS, SequentialLauncher, SubmititLauncher, submitit_settings
from detpre.analysis.study_spec import command_line_study, read_study_file
from detpre.utils.cli import cli_main

TOOLS = os.path.dirname(os.path.abspath(__file__))
TRAIN_NET = os.path.join(TOOLS, "train_net.py")
CONVERT_PRETRAINED = os.path.join(TOOLS, "convert_pretrained.py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", metavar="FILE", help="a study file: config, rows, stages, schedules, metrics")
    parser.add_argument("--config-file", default="", metavar="FILE", help="the config of every run")
    parser.add_argument(
        "--init",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="an initialization: NAME=scratch, NAME=stage:STAGE or NAME=checkpoint path/URL (repeat for each)",
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
        "--stage-opts",
        action="append",
        default=[],
        nargs="+",
        metavar="NAME KEY VALUE",
        help="KEY VALUE overrides for the study file's pre-training stage NAME, after its own",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="NAME",
        help="run only these initializations (and the stages they start from)",
    )
    parser.add_argument(
        "--schedules",
        nargs="+",
        default=[],
        metavar="KX",
        help="schedules to run, e.g. 1x 2x 4x 6x or 0.25x 0.5x 1x",
    )
    parser.add_argument("--output-dir", required=True, help="study folder: one sub-folder per run, table, plot")
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        help="metrics.json key of the table (repeat for several; the first one is drawn; default bbox/AP)",
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
    jobs = parser.add_argument_group("where the jobs run")
    jobs.add_argument("--launcher", choices=LAUNCHERS, default="local", help="default: one after another here")
    jobs.add_argument(
        "--submitit",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a submitit parameter of every job (timeout_min=4320, slurm_partition=NAME, cpus_per_task=10, ...)",
    )
    jobs.add_argument("--wait", action="store_true", help="with submitit: submit and poll until every job has ended")
    jobs.add_argument("--poll-seconds", type=float, default=60.0, help="with --wait: seconds between polls")
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


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    spec = command_line_study(
        read_study_file(args.study) if args.study else None,
        config_file=args.config_file,
        inits=args.init,
        init_configs=args.init_config,
        init_opts=args.init_opts,
        schedules=args.schedules,
        metrics=args.metric,
        opts=args.opts,
        submitit=args.submitit,
        stage_opts=args.stage_opts,
        only=args.only,
    )
    train_args = launcher_args(args)
    if args.launcher == "local":
        launcher = SequentialLauncher()
    else:
        parameters, extra = submitit_settings(
            args.launcher, spec.submitit, args.num_gpus, args.num_machines, args.dist_url
        )
        train_args += extra
        cluster = "slurm" if args.launcher == "slurm" else "local"
        launcher = SubmititLauncher(args.output_dir, cluster, parameters, args.wait, args.poll_seconds)
    study = InitStudy(
        spec.config_file,
        spec.inits,
        spec.schedules,
        args.output_dir,
        opts=spec.opts,
        metric=spec.metrics,
        launcher_args=train_args,
        stages=spec.stages,
    )
    plan = study.plan(CONVERT_PRETRAINED)
    if args.dry_run:
        sys.stdout.write(plan_summary(plan, TRAIN_NET))
        return 0
    try:
        cells, stages = study.collect(plan) if args.report_only else study.run(TRAIN_NET, plan, launcher=launcher)
    except KeyboardInterrupt:
        print("interrupted: the run in progress saved a checkpoint; run the same command to resume", file=sys.stderr)
        return 130
    inits = [i.name for i in study.inits]
    paths = write_results(cells, inits, study.schedules, study.metrics, study.output_dir, stages)
    png = plot_study(cells, os.path.join(study.output_dir, "init_study.png"))
    if png:
        paths["png"] = png
    print()
    print(markdown_table(cells, inits, study.schedules, study.metrics), end="")
    if stages:
        print("\n" + stages_table(stages), end="")
    print("\n" + "\n".join(f"written: {p}" for p in paths.values()))
    unfinished = [c for c in cells if c.status != "done"]
    for s in stages:
        if s.status != "done":
            print(f"stage {s.stage}: {s.status}" + (f": {s.error}" if s.error else ""), file=sys.stderr)
    for c in unfinished:
        print(f"{c.init}_{c.schedule}: {c.status}" + (f": {c.error}" if c.error else ""), file=sys.stderr)
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
