"""tools/init_study.py: initializations x schedules, resumable, read back into a table and a plot.

The fast tests check the pieces on hand-made run folders (known metrics) and configs; the
slow one runs a real 2 x 2 study on the demo data on the CPU, then runs it again after
breaking one run, which must be the only one trained again.
"""

import csv
import json
import math
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any, Tuple

import pytest
import torch
import torchvision
import yaml
from matplotlib.text import Text

from detpre.analysis.init_study import (
    SCRATCH,
    Cell,
    Init,
    InitStudy,
    Stage,
    draw_study,
    final_metric,
    is_finished,
    markdown_table,
    plot_study,
    prepare_weights,
    stages_table,
    write_results,
)
from detpre.analysis.study_jobs import JobOutcome
from detpre.analysis.study_spec import command_line_study, read_study_file
from detpre.utils.metrics import read_metrics
from kaisteval.figures import FINAL_VALUE_GID, finish

from conftest import DEMO_CONFIG, REPO, TINY_DEMO_OPTS, load_tool

init_study_tool = load_tool("init_study")
build_parser, main = init_study_tool.build_parser, init_study_tool.main

# A 1x schedule of 4 iterations at 2 images, LR drops after 2 and 3; checkpoints and
# evaluations every 4 iterations, on 4 validation images.
TOY_OPTS = TINY_DEMO_OPTS + [
    "SOLVER.SCHEDULE.REFERENCE_IMS_PER_BATCH",
    "2",
    "SOLVER.SCHEDULE.ITERS_PER_X",
    "4",
    "SOLVER.SCHEDULE.STEPS_FROM_END",
    "(2, 1)",
    "SOLVER.SCHEDULE.WARMUP_ITERS",
    "1",
    "SOLVER.SCHEDULE.BASE_LR",
    "0.01",
    "SOLVER.SCHEDULE.CHECKPOINT_PERIOD",
    "4",
    "SOLVER.SCHEDULE.EVAL_PERIOD",
    "4",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SEED",
    "3",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "INPUT.MAX_SIZE_TEST",
    "128",
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "20",
    "DATASETS.TEST",
    "('detpre_demo_val_4_s0',)",
]
# What fine-tuning BN-trained ImageNet weights means in Detectron2: a frozen-BN backbone.
IMAGENET_OPTS = [
    "MODEL.BACKBONE.NAME",
    "build_resnet_fpn_backbone",
    "MODEL.RESNETS.NORM",
    "FrozenBN",
    "MODEL.BACKBONE.FREEZE_AT",
    "2",
]


def torchvision_resnet18(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


# ------------------------------------------------------------------ initializations
def test_init_parse_and_bad_entries():
    assert Init.parse("scratch=scratch") == Init("scratch", SCRATCH)
    assert Init.parse(" coco = detectron2://COCO/x.pkl ").spec == "detectron2://COCO/x.pkl"
    for bad, message in [("scratch", "NAME=SPEC"), ("=x.pkl", "NAME=SPEC"), ("a/b=x.pkl", "'a/b'")]:
        with pytest.raises(ValueError, match=message):
            Init.parse(bad)


def test_torchvision_state_dict_is_converted_with_the_config_it_needs(tmp_path):
    src = torchvision_resnet18(tmp_path / "resnet18.pth")
    weights = prepare_weights(Init("imagenet", str(src)), str(tmp_path / "weights"))
    assert weights.path == str(tmp_path / "weights" / "imagenet.pkl")
    with open(weights.path, "rb") as f:
        converted = pickle.load(f)["model"]
    original = torch.load(src)
    assert (converted["res2.1.conv2.weight"] == original["layer1.1.conv2.weight"].numpy()).all()
    assert not any(k.startswith("fc.") for k in converted)
    opts = dict(zip(weights.opts[::2], weights.opts[1::2]))
    assert opts["MODEL.RESNETS.DEPTH"] == "18"
    assert opts["INPUT.FORMAT"] == "RGB"
    assert opts["MODEL.RESNETS.STRIDE_IN_1X1"] == "False"


def test_detectron2_checkpoints_and_scratch_are_passed_through(tmp_path):
    d2 = tmp_path / "box_pretrained.pth"
    torch.save({"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(2, 3, 7, 7)}, "iteration": 9}, d2)
    assert prepare_weights(Init("box", str(d2)), str(tmp_path)).path == str(d2)
    zoo = tmp_path / "R-50.pkl"
    zoo.write_bytes(b"not opened")  # .pkl files go to Detectron2's loader unread
    assert prepare_weights(Init("in", str(zoo)), str(tmp_path)).path == str(zoo)
    assert prepare_weights(Init("s", SCRATCH), str(tmp_path)).path == ""
    for url in ("detectron2://ImageNetPretrained/MSRA/R-50.pkl", "catalog://ImageNetPretrained/FAIR/R-50-GN"):
        assert prepare_weights(Init("zoo", url), str(tmp_path)).path == url


def test_unusable_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--init x=.*missing.pth"):
        prepare_weights(Init("x", str(tmp_path / "missing.pth")), str(tmp_path))
    other = tmp_path / "vit.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="neither a Detectron2 checkpoint.*blocks.0.attn"):
        prepare_weights(Init("vit", str(other)), str(tmp_path))
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(ValueError, match="cannot read .*notes.pth"):
        prepare_weights(Init("t", str(text)), str(tmp_path))


def test_cli_attaches_per_init_configs_and_overrides(tmp_path):
    args = build_parser().parse_args(
        [
            "--config-file",
            "c.yaml",
            "--init",
            "scratch=scratch",
            "--init",
            "imagenet=r.pkl",
            "--init-opts",
            "imagenet",
            "MODEL.RESNETS.NORM",
            "FrozenBN",
            "--init-config",
            "imagenet=ft.yaml",
            "--schedules",
            "1x",
            "--output-dir",
            str(tmp_path),
            "--opts",
            "MODEL.DEVICE",
            "cpu",
        ]
    )

    def study(**changes):
        given = dict(
            config_file=args.config_file,
            inits=args.init,
            init_configs=args.init_config,
            init_opts=args.init_opts,
            schedules=args.schedules,
            opts=args.opts,
        )
        return command_line_study(None, **{**given, **changes})

    scratch, imagenet = study().inits
    assert scratch == Init("scratch", "scratch")
    assert imagenet == Init("imagenet", "r.pkl", "ft.yaml", ("MODEL.RESNETS.NORM", "FrozenBN"))
    assert study().opts == ["MODEL.DEVICE", "cpu"] and study().metrics == ["bbox/AP"]
    with pytest.raises(ValueError, match="--init-opts coco: no initialization is named 'coco'"):
        study(init_opts=[*args.init_opts, ["coco", "A", "1"]])
    with pytest.raises(ValueError, match="no schedules"):
        study(schedules=[])


# ------------------------------------------------------------------------- planning
def test_plan_resolves_each_schedule_and_refuses_study_keys(tmp_path):
    inits = [Init("scratch", SCRATCH), Init("other", SCRATCH, opts=("SOLVER.IMS_PER_BATCH", "1"))]
    study = InitStudy(str(DEMO_CONFIG), inits, ["1x", "2x"], str(tmp_path), opts=TOY_OPTS)
    plans = {p.name: p for p in study.plan()}
    assert sorted(plans) == ["other_1x", "other_2x", "scratch_1x", "scratch_2x"]
    assert plans["scratch_1x"].cfg.SOLVER.MAX_ITER == 4 and plans["scratch_2x"].cfg.SOLVER.MAX_ITER == 8
    assert plans["scratch_2x"].cfg.SOLVER.STEPS == (6, 7)
    # The per-init batch comes after the study's: the same images are seen in twice the iterations.
    assert plans["other_2x"].cfg.SOLVER.MAX_ITER == 16 and plans["other_2x"].images_per_iter == 1
    assert plans["other_2x"].cfg.SOLVER.STEPS == (12, 14)
    assert plans["scratch_1x"].cfg.OUTPUT_DIR == str(tmp_path / "scratch_1x")
    assert "--resume" in plans["scratch_1x"].argv
    # At 4 images the drops at the last 2 and 1 reference iterations (at 2 images) would fall on
    # one iteration: too short to hold both LR drops.
    four = Init("four", SCRATCH, opts=("SOLVER.IMS_PER_BATCH", "4"))
    with pytest.raises(ValueError, match="run four_2x: Schedule '2x' at SOLVER.IMS_PER_BATCH 4 is 4 iterations"):
        InitStudy(str(DEMO_CONFIG), [four], ["2x"], str(tmp_path), opts=TOY_OPTS).plan()
    # What the user sets in --opts is what every run trains, the schedule notwithstanding.
    (fixed,) = InitStudy(
        str(DEMO_CONFIG), inits[:1], ["2x"], str(tmp_path), opts=TOY_OPTS + ["SOLVER.MAX_ITER", "5"]
    ).plan()
    assert fixed.cfg.SOLVER.MAX_ITER == 5 and fixed.argv[-6:-4] == ["SOLVER.MAX_ITER", "5"]
    with pytest.raises(ValueError, match="MODEL.WEIGHTS.*sets itself"):
        InitStudy(str(DEMO_CONFIG), inits, ["1x"], str(tmp_path), opts=["MODEL.WEIGHTS", "x.pkl"])
    with pytest.raises(ValueError, match="Unknown schedule 'long'"):
        InitStudy(str(DEMO_CONFIG), inits, ["long"], str(tmp_path))
    with pytest.raises(ValueError, match="repeated: \\['scratch'\\]"):
        InitStudy(str(DEMO_CONFIG), [inits[0], inits[0]], ["1x"], str(tmp_path))


def test_bad_override_names_the_run(tmp_path):
    study = InitStudy(
        str(DEMO_CONFIG), [Init("s", SCRATCH, opts=("SOLVER.NO_SUCH_KEY", "1"))], ["1x"], str(tmp_path), opts=TOY_OPTS
    )
    with pytest.raises(ValueError, match="run s_1x: .*SOLVER.NO_SUCH_KEY"):
        study.plan()


def test_folder_of_another_config_is_refused(tmp_path):
    study = InitStudy(str(DEMO_CONFIG), [Init("s", SCRATCH)], ["1x"], str(tmp_path), opts=TOY_OPTS)
    (plan,) = study.plan()
    os.makedirs(plan.output_dir)
    Path(plan.output_dir, "config.yaml").write_text(plan.cfg.dump())
    study.plan()  # the same config: fine
    changed = InitStudy(
        str(DEMO_CONFIG),
        [Init("s", SCRATCH)],
        ["1x"],
        str(tmp_path),
        opts=TOY_OPTS + ["SOLVER.SCHEDULE.ITERS_PER_X", "6"],
    )
    with pytest.raises(ValueError, match="another config.*SOLVER.MAX_ITER: 4 -> 6"):
        changed.plan()


# ------------------------------------------------------------------ reading results
def fake_run(output_dir: Path, records, final_checkpoint=True, partial_line=False):
    output_dir.mkdir(parents=True)
    with open(output_dir / "metrics.json", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        if partial_line:
            f.write('{"bbox/AP": 99, "itera')
    if final_checkpoint:
        (output_dir / "model_final.pth").write_bytes(b"")


def test_finished_runs_table_and_curves(tmp_path):
    study = InitStudy(
        str(DEMO_CONFIG), [Init("scratch", SCRATCH), Init("ft", SCRATCH)], ["1x", "2x"], str(tmp_path), opts=TOY_OPTS
    )
    plans = study.plan()
    ap = {"scratch_1x": 3.25, "scratch_2x": 7.5, "ft_1x": float("nan")}
    # scratch_2x: evaluated after iteration 3, then resumed and evaluated twice at the end.
    fake_run(tmp_path / "scratch_1x", [{"iteration": 3, "loss": 1.0}, {"iteration": 4, "bbox/AP": 3.25}])
    fake_run(
        tmp_path / "scratch_2x",
        [{"iteration": 3, "bbox/AP": 1.0}, {"iteration": 8, "bbox/AP": 7.0}, {"iteration": 9, "bbox/AP": 7.5}],
        partial_line=True,
    )
    fake_run(tmp_path / "ft_1x", [{"iteration": 4, "bbox/AP": float("nan"), "bbox/AP50": 0.0}])
    # Interrupted: its last record is a periodic evaluation, and no model_final.
    fake_run(tmp_path / "ft_2x", [{"iteration": 3, "bbox/AP": 2.0}], final_checkpoint=False)
    assert [is_finished(p.output_dir, p.cfg.SOLVER.MAX_ITER) for p in plans] == [True, True, True, False]
    assert final_metric(read_metrics(str(tmp_path / "scratch_2x")), "bbox/AP") == (9, 7.5)

    cells = {f"{c.init}_{c.schedule}": c for c in study.collect(plans)[0]}
    assert {k: c.status for k, c in cells.items()} == {
        "scratch_1x": "done",
        "scratch_2x": "done",
        "ft_1x": "done",
        "ft_2x": "not run",
    }
    assert cells["scratch_2x"].value == 7.5 and math.isnan(cells["ft_1x"].value) and cells["ft_2x"].value is None
    # x is images seen: 2 images per iteration; both end-of-run evaluations land at MAX_ITER.
    assert cells["scratch_2x"].curve == [(8, 1.0), (16, 7.5)]
    assert cells["ft_2x"].curve == [(8, 2.0)]

    table = markdown_table(list(cells.values()), ["scratch", "ft"], ["1x", "2x"], "bbox/AP")
    assert table.splitlines() == [
        "| bbox/AP | 1x | 2x |",
        "|:--|--:|--:|",
        "| scratch | 3.25 | 7.50 |",
        "| ft | nan | - |",
    ]
    paths = write_results(list(cells.values()), ["scratch", "ft"], ["1x", "2x"], "bbox/AP", str(tmp_path))
    with open(paths["csv"]) as f:
        rows = list(csv.reader(f))
    assert rows == [["init", "1x", "2x"], ["scratch", "3.25", "7.5"], ["ft", "nan", ""]]
    with open(paths["json"]) as f:
        runs = {f"{r['init']}_{r['schedule']}": r for r in json.load(f)["runs"]}
    assert runs["scratch_1x"]["value"] == ap["scratch_1x"] and runs["ft_1x"]["value"] is None
    assert runs["scratch_2x"]["images_seen"] == 16


def study_cells(metric: str, value):
    """Three initializations x three schedules; the two 0.5x runs of scratch and backbone end
    on the same value at the same x, and the detector's end close to each other."""
    cells = []
    for k, init in enumerate(["scratch", "backbone", "detector"]):
        for n, schedule in enumerate(["0.5x", "1x", "2x"]):
            xs = [120 * (i + 1) for i in range(2 * 2**n)]
            curve = [(x, value(k, n, x)) for x in xs]
            cells.append(Cell(init, schedule, "", "done", metric, value=curve[-1][1], curve=curve))
    return cells


def test_study_figure_colours_initializations_and_styles_schedules(tmp_path):
    ap = study_cells("bbox/AP", lambda k, n, x: 1.6 if (k < 2 and n == 0) else 70 + n if k == 2 else 10 * k + x / 40)
    fig = finish(draw_study(ap))
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 9
    colour = {(c.init, c.schedule): line.get_color() for c, line in zip(ap, lines)}
    style = {(c.init, c.schedule): (line.get_linestyle(), line.get_marker()) for c, line in zip(ap, lines)}
    for init in ("scratch", "backbone", "detector"):
        assert len({colour[(init, s)] for s in ("0.5x", "1x", "2x")}) == 1  # one colour per initialization
    assert len(set(colour.values())) == 3
    for schedule in ("0.5x", "1x", "2x"):
        assert len({style[(i, schedule)] for i in ("scratch", "backbone", "detector")}) == 1  # one style each
    assert len(set(style.values())) == 3
    labels = [t for t in ax.texts if t.get_gid() == FINAL_VALUE_GID]
    assert sorted(t.get_text() for t in labels) == sorted(f"{c.value:.1f}" for c in ap)
    boxes = [Text.get_window_extent(t) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "initialization",
        "scratch",
        "backbone",
        "detector",
        "schedule",
        "0.5x",
        "1x",
        "2x",
    ]
    assert legend.get_window_extent().x0 > ax.get_window_extent().x1
    assert ax.get_xlabel() == "images seen" and ax.get_yscale() == "linear" and ax.get_ylim()[1] <= 100
    assert plot_study(ap, str(tmp_path / "s.png")) == str(tmp_path / "s.png")
    assert plot_study([Cell("s", "1x", "", "not run", "bbox/AP")], str(tmp_path / "none.png")) is None


def test_study_figure_of_a_kaist_miss_rate_is_a_log_axis_lower_is_better():
    mr = study_cells("kaist/MR_all", lambda k, n, x: 100.0 if x == 120 else 90.0 - 20 * k - 5 * n - x / 100)
    ax = finish(draw_study(mr)).axes[0]
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    assert high == 100.0 and low <= min(c.value for c in mr)  # 100% is the top, never past it
    assert "100%" in [t.get_text() for t in ax.get_yticklabels()]
    assert ax.get_ylabel() == "kaist/MR_all (lower is better)"
    assert not any(line.get_clip_on() for line in ax.get_lines())  # the 100% start is drawn whole


def test_missing_metric_lists_what_the_evaluation_wrote(tmp_path):
    study = InitStudy(str(DEMO_CONFIG), [Init("s", SCRATCH)], ["1x"], str(tmp_path), opts=TOY_OPTS, metric="kaist/MR")
    plans = study.plan()
    fake_run(tmp_path / "s_1x", [{"iteration": 4, "bbox/AP": 1.0, "bbox/AP50": 2.0}])
    (cell,), _ = study.collect(plans)
    assert cell.status == "failed"
    assert "no 'kaist/MR'" in cell.error and "['bbox/AP', 'bbox/AP50']" in cell.error


def test_dry_run_and_report_only_launch_nothing(tmp_path, capsys, monkeypatch):
    def no_launch(*args, **kwargs):
        raise AssertionError(f"launched {args}")

    monkeypatch.setattr(subprocess, "Popen", no_launch)
    argv = [
        "--config-file",
        str(DEMO_CONFIG),
        "--init",
        "scratch=scratch",
        "--schedules",
        "1x",
        "2x",
        "--output-dir",
        str(tmp_path),
        "--opts",
        *TOY_OPTS,
    ]
    fake_run(tmp_path / "scratch_1x", [{"iteration": 4, "bbox/AP": 5.0}])
    (tmp_path / "scratch_2x").mkdir()
    (tmp_path / "scratch_2x" / "last_checkpoint").write_text("model_0000003.pth")
    assert main([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "scratch_1x: finished, MAX_ITER 4 x 2 images" in printed
    assert "scratch_2x: resume, MAX_ITER 8 x 2 images, STEPS (6, 7)" in printed
    assert "--schedule 2x --resume" in printed and not (tmp_path / "init_study.md").exists()
    # Not every run has finished: the table shows what has, and the exit status says so.
    assert main([*argv, "--report-only"]) == 1
    assert (tmp_path / "init_study.md").read_text().splitlines()[2] == "| scratch | 5.00 | - |"
    assert (tmp_path / "init_study.png").is_file()


FAKE_TRAIN_NET = """
import os, signal, sys, time
out = sys.argv[sys.argv.index("OUTPUT_DIR") + 1]

def save_and_exit(signum, frame):
    open(os.path.join(out, "saved_on_signal"), "w").close()
    sys.exit(128 + signum)

signal.signal(signal.SIGTERM, save_and_exit)
os.kill(os.getppid(), signal.SIGTERM)  # the cluster preempts the study
time.sleep(60)
"""


def test_sigterm_reaches_the_run_and_stops_the_study(tmp_path):
    script = tmp_path / "fake_train_net.py"
    script.write_text(FAKE_TRAIN_NET)
    study = InitStudy(str(DEMO_CONFIG), [Init("s", SCRATCH)], ["1x", "2x"], str(tmp_path / "study"), opts=TOY_OPTS)
    messages = []
    cells, _ = study.run(str(script), log=messages.append)
    assert [c.status for c in cells] == ["stopped", "not run"]
    assert (tmp_path / "study" / "s_1x" / "saved_on_signal").is_file()
    assert not (tmp_path / "study" / "s_2x").exists()
    assert "s_1x: stopped" in messages[-1]


# ------------------------------------------------------------------- end to end
def mtimes(run_dir: Path):
    return {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file()}


@pytest.mark.slow
def test_study_runs_skips_finished_runs_and_resumes_a_broken_one(demo_root, tmp_path, monkeypatch, capsys):
    # The study runs in this process; each run is a tools/train_net.py process of its own.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "study"
    weights = torchvision_resnet18(tmp_path / "resnet18_torchvision.pth")
    argv = [
        "--config-file",
        str(DEMO_CONFIG),
        "--init",
        "scratch=scratch",
        "--init",
        f"imagenet={weights}",
        "--init-opts",
        "imagenet",
        *IMAGENET_OPTS,
        "--schedules",
        "1x",
        "2x",
        "--output-dir",
        str(out),
        "--opts",
        *TOY_OPTS,
    ]
    assert main(argv) == 0, capsys.readouterr()
    first = capsys.readouterr().out
    runs = ["scratch_1x", "scratch_2x", "imagenet_1x", "imagenet_2x"]
    for run in runs:
        assert (out / run / "model_final.pth").is_file(), run
    # The converted weights and the values they need reached the ImageNet runs.
    saved = yaml.safe_load((out / "imagenet_2x" / "config.yaml").read_text())
    assert saved["MODEL"]["WEIGHTS"] == str(out / "weights" / "imagenet.pkl")
    assert saved["INPUT"]["FORMAT"] == "RGB" and saved["MODEL"]["RESNETS"]["NORM"] == "FrozenBN"
    assert saved["SOLVER"]["MAX_ITER"] == 8

    def table_matches_metrics():
        with open(out / "init_study.json") as f:
            cells = {f"{c['init']}_{c['schedule']}": c for c in json.load(f)["runs"]}
        for run in runs:
            last = [r["bbox/AP"] for r in read_metrics(str(out / run)) if "bbox/AP" in r][-1]
            value = cells[run]["value"]
            assert (value is None and math.isnan(last)) or value == last, run
            assert cells[run]["status"] == "done"
        return cells

    cells = table_matches_metrics()
    assert cells["scratch_2x"]["images_seen"] == 16 and len(cells["scratch_2x"]["curve"]) == 2
    assert "| bbox/AP | 1x | 2x |" in first
    png = out / "init_study.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Again: everything is finished, nothing is launched.
    before = {run: mtimes(out / run) for run in runs}

    def no_launch(*args, **kwargs):
        raise AssertionError(f"a finished study launched {args}")

    with monkeypatch.context() as m:
        m.setattr(subprocess, "Popen", no_launch)
        assert main(argv) == 0, capsys.readouterr()
    assert capsys.readouterr().out.count("finished, skipped") == 4
    assert {run: mtimes(out / run) for run in runs} == before

    # Break imagenet_2x as a kill at iteration 5 would: no final checkpoint, the last one gone.
    (out / "imagenet_2x" / "model_final.pth").unlink()
    (out / "imagenet_2x" / "model_0000007.pth").unlink()
    assert main(argv) == 0, capsys.readouterr()
    third = capsys.readouterr().out
    assert third.count("finished, skipped") == 3 and "imagenet_2x: resuming" in third
    assert (out / "imagenet_2x" / "model_final.pth").is_file()
    log = (out / "imagenet_2x" / "log.txt").read_text()
    assert "Starting training from iteration 4" in log
    for run in runs[:3]:
        assert mtimes(out / run) == before[run]
    table_matches_metrics()


# ------------------------------------------------------------------ pre-training stages
BOX_PRETRAIN = REPO / "configs" / "AlignDet" / "Demo" / "pretrain_faster_rcnn_R18_FPN.yaml"
BOX_FINETUNE = REPO / "configs" / "AlignDet" / "Demo" / "finetune_faster_rcnn_R18_FPN.yaml"


def test_stages_become_jobs_that_run_before_the_rows_that_need_them(tmp_path):
    zoo = "catalog://ImageNetPretrained/FAIR/R-50-GN"
    stages = [
        Stage("again", str(BOX_PRETRAIN), "stage:first", opts=("SOLVER.MAX_ITER", "3")),  # given before its source
        Stage("first", str(BOX_PRETRAIN), zoo),
    ]
    inits = [
        Init("scratch", SCRATCH),
        Init("box", "stage:again", str(BOX_FINETUNE), ("SOLVER.BASE_LR", "0.01")),
    ]
    study = InitStudy(str(DEMO_CONFIG), inits, ["1x"], str(tmp_path), opts=TOY_OPTS, stages=stages)
    with pytest.raises(ValueError, match="need tools/convert_pretrained.py"):
        study.plan()
    plan = study.plan("convert_pretrained.py")
    assert [s.stage.name for s in plan.stages] == ["first", "again"]  # each after the stage it starts from
    first, again = plan.stages
    # A box-domain pre-training takes its image-domain weights through MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS.
    assert first.weights_key == "MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS"
    assert first.cfg.MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS == zoo and first.cfg.MODEL.WEIGHTS == ""
    assert first.cfg.OUTPUT_DIR == str(tmp_path / "pretrain" / "first")
    assert again.cfg.MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS == str(tmp_path / "weights" / "stage_again.pth")
    assert again.cfg.SOLVER.MAX_ITER == 3 and "--resume" in again.argv
    to_stage, to_row = plan.conversions
    assert to_stage.argv == [
        "convert_pretrained.py",
        str(tmp_path / "pretrain" / "first" / "model_final.pth"),
        str(tmp_path / "weights" / "stage_again.pth"),
        "--config-file",
        str(BOX_PRETRAIN),
        "--report",
        str(tmp_path / "weights" / "stage_again.json"),
        "SOLVER.MAX_ITER",
        "3",
    ]
    # The row's conversion is checked against the row's model: its config and overrides.
    assert to_row.argv[1:6] == [
        str(tmp_path / "pretrain" / "again" / "model_final.pth"),
        str(tmp_path / "weights" / "init_box.pth"),
        "--config-file",
        str(BOX_FINETUNE),
        "--report",
    ]
    assert to_row.argv[7:] == [*TOY_OPTS, "SOLVER.BASE_LR", "0.01"]
    cells = {c.name: c for c in plan.cells}
    assert cells["box_1x"].cfg.MODEL.WEIGHTS == str(tmp_path / "weights" / "init_box.pth")
    assert cells["box_1x"].cfg.SOLVER.BASE_LR == 0.01

    jobs = study.jobs(plan, "train_net.py")
    assert [(j.name, j.needs) for j in jobs] == [
        ("pretrain_first", ()),
        ("convert_first_to_stage_again", ("pretrain_first",)),
        ("pretrain_again", ("convert_first_to_stage_again",)),
        ("convert_again_to_init_box", ("pretrain_again",)),
        ("scratch_1x", ()),
        ("box_1x", ("convert_again_to_init_box",)),
    ]
    assert jobs[0].command[1:3] == ["train_net.py", "--config-file"] and not any(j.is_done() for j in jobs)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "init_box.pth").write_bytes(b"")
    assert jobs[3].is_done()  # a conversion is done when its weights are there

    # The table tells why a row did not run: what it waited for.
    outcome = {"pretrain_first": JobOutcome("failed", "exited with status 1")}
    outcome["convert_again_to_init_box"] = JobOutcome("not run", "pretrain_again not done")
    cells, stage_rows = study.collect(plan, outcome)
    assert [(s.stage, s.status) for s in stage_rows] == [("first", "failed"), ("again", "not run")]
    box = next(c for c in cells if c.init == "box")
    assert box.status == "not run" and "convert_again_to_init_box: not run (pretrain_again not done)" in box.error
    assert "| first | catalog://ImageNetPretrained/FAIR/R-50-GN | 60 x 4 | failed |" in stages_table(stage_rows)


def test_stage_mistakes_are_refused_before_anything_runs(tmp_path):
    box = str(BOX_PRETRAIN)
    with pytest.raises(ValueError, match="--init b=stage:nope: the study has no stage 'nope'"):
        InitStudy(str(DEMO_CONFIG), [Init("b", "stage:nope")], ["1x"], str(tmp_path))
    loop = [Stage("a", box, "stage:b"), Stage("b", box, "stage:a")]
    with pytest.raises(ValueError, match="in a cycle: a -> b -> a"):
        InitStudy(str(DEMO_CONFIG), [Init("b", "stage:a")], ["1x"], str(tmp_path), stages=loop)
    with pytest.raises(ValueError, match="stage a's opts set \\['MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS'\\]"):
        InitStudy(
            str(DEMO_CONFIG),
            [Init("s", SCRATCH)],
            ["1x"],
            str(tmp_path),
            stages=[Stage("a", box, SCRATCH, opts=("MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS", "x.pkl"))],
        )
    bad = InitStudy(
        str(DEMO_CONFIG),
        [Init("s", SCRATCH)],
        ["1x"],
        str(tmp_path),
        opts=TOY_OPTS,
        stages=[Stage("a", box, SCRATCH, opts=("SOLVER.NO_SUCH_KEY", "1"))],
    )
    with pytest.raises(ValueError, match="stage a: .*SOLVER.NO_SUCH_KEY"):
        bad.plan("convert_pretrained.py")


def test_several_metrics_share_one_table(tmp_path):
    metrics = ["kaist/MR_all", "kaist/MR_day", "kaist/MR_night"]
    study = InitStudy(
        str(DEMO_CONFIG), [Init("s", SCRATCH)], ["1x", "2x"], str(tmp_path), opts=TOY_OPTS, metric=metrics
    )
    plan = study.plan()
    fake_run(tmp_path / "s_1x", [{"iteration": 4, "kaist/MR_all": 30.0, "kaist/MR_day": 25.0, "kaist/MR_night": 40.5}])
    fake_run(tmp_path / "s_2x", [{"iteration": 8, "kaist/MR_all": 20.0, "kaist/MR_day": 15.0}])
    cells, _ = study.collect(plan)
    assert cells[0].status == "done" and cells[0].value == 30.0 and cells[0].values["kaist/MR_night"] == 40.5
    assert cells[1].status == "failed" and "no 'kaist/MR_night'" in cells[1].error
    table = markdown_table(cells, ["s"], ["1x", "2x"], metrics).splitlines()
    assert table[0] == (
        "| init | 1x kaist/MR_all | 1x kaist/MR_day | 1x kaist/MR_night | 2x kaist/MR_all | 2x kaist/MR_day "
        "| 2x kaist/MR_night |"
    )
    assert table[2] == "| s | 30.00 | 25.00 | 40.50 | - | - | - |"
    paths = write_results(cells, ["s"], ["1x", "2x"], metrics, str(tmp_path))
    with open(paths["csv"]) as f:
        assert list(csv.reader(f))[1] == ["s", "30.0", "25.0", "40.5", "", "", ""]
    with open(paths["json"]) as f:
        assert json.load(f)["metrics"] == metrics


def test_study_file_dry_run_lists_every_job(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "config_file": str(DEMO_CONFIG),
                "schedules": ["1x"],
                "metrics": ["bbox/AP", "bbox/AP50"],
                "opts": TOY_OPTS,
                "stages": {"box": {"config_file": str(BOX_PRETRAIN), "weights": "scratch"}},
                "inits": {"box": {"weights": "stage:box", "config_file": str(BOX_FINETUNE)}},
            }
        )
    )
    out = tmp_path / "out"
    assert main(["--study", str(study), "--init", "scratch=scratch", "--output-dir", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    names = [line.split(":")[0] for line in printed if not line.startswith(" ")]
    assert names == ["pretrain_box", "convert_box_to_init_box", "box_1x", "scratch_1x"]
    assert printed[0] == "pretrain_box: new, MAX_ITER 60 x 4 images, BASE_LR 0.02"
    assert f"convert_pretrained.py {out}/pretrain/box/model_final.pth {out}/weights/init_box.pth" in printed[3]
    assert not out.exists() or not any(out.iterdir())  # a dry run writes nothing
    assert main(["--study", str(study), "--output-dir", str(out), "--launcher", "slurm", "--dry-run"]) == 2
    assert "needs the cluster's time limit" in capsys.readouterr().err


def _shipped_study(name: str, tmp_path) -> Tuple[InitStudy, Any]:
    spec = read_study_file(str(REPO / "configs" / name / "init_study.yaml"))
    study = InitStudy(
        spec.config_file,
        spec.inits,
        spec.schedules,
        str(tmp_path / name),
        opts=spec.opts,
        metric=spec.metrics,
        stages=spec.stages,
    )
    return study, study.plan("convert_pretrained.py")


def test_the_kaist_study_ranks_every_route_on_one_detector(tmp_path):
    study, plan = _shipped_study("KAIST", tmp_path)
    out = tmp_path / "KAIST"
    assert study.metrics == ["kaist/MR_all", "kaist/MR_day", "kaist/MR_night"]
    rows = ["scratch", "imagenet", "coco", "ssl", "ssl_boxdomain", "imagenet_boxdomain"]
    assert [c.name for c in plan.cells] == [f"{r}_{s}" for r in rows for s in ("1x", "2x", "4x")]
    cells = {c.name: c.cfg for c in plan.cells}
    # One detector, one training set and one evaluation for every row; only the start differs.
    for cfg in cells.values():
        assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and cfg.INPUT.FORMAT == "BGRT"
        assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.MODEL.RESNETS.NORM == "GN"
        assert cfg.DATASETS.TRAIN == cells["scratch_1x"].DATASETS.TRAIN
        assert cfg.DATASETS.TEST == ("kaist_test_all20_improved",)
    assert cells["scratch_1x"].MODEL.WEIGHTS == ""
    assert cells["scratch_4x"].SOLVER.MAX_ITER == 4 * cells["scratch_1x"].SOLVER.MAX_ITER
    assert cells["imagenet_1x"].MODEL.WEIGHTS == "catalog://ImageNetPretrained/FAIR/R-50-GN"
    assert tuple(cells["imagenet_1x"].MODEL.PIXEL_STD) == (1.0, 1.0, 1.0, 1.0)  # Caffe2 weights
    assert cells["coco_1x"].MODEL.WEIGHTS.startswith("detectron2://Misc/mask_rcnn_R_50_FPN_3x_gn/")
    for row in ("ssl", "ssl_boxdomain", "imagenet_boxdomain"):
        assert cells[f"{row}_2x"].MODEL.WEIGHTS == str(out / "weights" / f"init_{row}.pth")
    assert cells["ssl_boxdomain_1x"].SOLVER.BASE_LR == 1.5 * cells["ssl_1x"].SOLVER.BASE_LR  # AlignDet's recipe

    # The chain: SSL from random init -> box-domain from its backbone; ImageNet -> box-domain.
    stages = {s.stage.name: s for s in plan.stages}
    assert list(stages) == ["ssl", "ssl_boxdomain", "imagenet_boxdomain"]
    assert stages["ssl"].cfg.MODEL.META_ARCHITECTURE == "ImageDomainPretrainer"
    assert stages["ssl"].cfg.MODEL.WEIGHTS == "" and stages["ssl"].cfg.DATASETS.TRAIN == ("kaist_train_all02",)
    box = stages["ssl_boxdomain"].cfg
    assert box.MODEL.META_ARCHITECTURE == "BoxDomainPretrainer"
    assert box.MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS == str(out / "weights" / "stage_ssl_boxdomain.pth")
    assert (
        stages["imagenet_boxdomain"].cfg.MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS
        == "catalog://ImageNetPretrained/FAIR/R-50-GN"
    )
    # Each conversion is checked against the config of what starts from it.
    consumers = {c.consumer: c.argv[4] for c in plan.conversions}
    kaist, aligndet = REPO / "configs" / "KAIST", REPO / "configs" / "AlignDet" / "KAIST"
    assert consumers == {
        "stage ssl_boxdomain": str(kaist / "aligndet_pretrain_faster_rcnn_R_50_FPN_early_fusion_gn_mocov2.yaml"),
        "init ssl": str(kaist / "faster_rcnn_R_50_FPN_early_fusion_gn_mocov2.yaml"),
        "init ssl_boxdomain": str(kaist / "faster_rcnn_R_50_FPN_early_fusion_gn_mocov2_aligndet.yaml"),
        "init imagenet_boxdomain": str(aligndet / "finetune_faster_rcnn_R_50_FPN_early_fusion_gn_imagenet.yaml"),
    }


def test_the_demo_study_is_the_kaist_one_without_imagenet(tmp_path, capsys):
    study, plan = _shipped_study("Demo", tmp_path)
    rows = ["scratch", "ssl", "ssl_boxdomain", "boxdomain"]
    assert [c.name for c in plan.cells] == [f"{r}_{s}" for r in rows for s in ("0.5x", "1x")]
    cells = {c.name: c.cfg for c in plan.cells}
    for cfg in cells.values():  # the same 100 labeled images and val set for every row
        assert cfg.DATASETS.TRAIN == ("detpre_demo_train_100_s0",) and cfg.DATASETS.TEST == ("detpre_demo_val",)
    assert cells["ssl_1x"].SOLVER.MAX_ITER == 240 and cells["ssl_0.5x"].SOLVER.MAX_ITER == 120
    assert cells["boxdomain_1x"].SOLVER.BASE_LR == 0.03 and cells["scratch_1x"].SOLVER.BASE_LR == 0.02
    assert [s.stage.name for s in plan.stages] == ["ssl", "ssl_boxdomain", "boxdomain"]
    # The tool reads the same file; a dry run lists the jobs in order and writes nothing.
    out = tmp_path / "dry"
    assert main(["--study", str(REPO / "configs/Demo/init_study.yaml"), "--output-dir", str(out), "--dry-run"]) == 0
    names = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line and not line.startswith(" ")]
    assert names[:7] == [
        "pretrain_ssl",
        "pretrain_ssl_boxdomain",
        "pretrain_boxdomain",
        "convert_ssl_to_stage_ssl_boxdomain",  # one conversion per consumer, checked against its config
        "convert_ssl_to_init_ssl",
        "convert_ssl_boxdomain_to_init_ssl_boxdomain",
        "convert_boxdomain_to_init_boxdomain",
    ]
    assert names[7:] == [c.name for c in plan.cells]
    assert not out.exists() or not any(out.iterdir())


# The demo study's stages at a few iterations on a 16-image subset (MoCo's queue a multiple of
# the batch; the box-domain stage on its own proposals of that subset).
TINY_SSL_STAGE = ["SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "2", "MODEL.IMAGE_DOMAIN.QUEUE_SIZE", "8"]
TINY_SSL_STAGE += ["DATASETS.TRAIN", "('detpre_demo_train_16_s0',)", "DATALOADER.NUM_WORKERS", "0"]
TINY_BOX_STAGE = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)"]
TINY_BOX_STAGE += ["SOLVER.WARMUP_ITERS", "1", "DATASETS.TRAIN", "('detpre_demo_train_16_s0',)"]
TINY_BOX_STAGE += ["DATALOADER.NUM_WORKERS", "0"]


@pytest.mark.slow
def test_the_demo_study_runs_the_target_only_chain(demo_root, tmp_path, monkeypatch, capsys):
    """configs/Demo/init_study.yaml as a user runs it, shrunk by flags only: MoCo v2 -> its
    conversion -> box-domain pre-training from it -> conversion -> fine-tuning, beside scratch."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    proposals = tmp_path / "proposals.json"
    tool = load_tool("precompute_proposals")
    assert tool.main(["--dataset", "detpre_demo_train_16_s0", "--output", str(proposals), "--workers", "1"]) == 0
    out = tmp_path / "study"
    argv = ["--study", str(REPO / "configs" / "Demo" / "init_study.yaml"), "--output-dir", str(out)]
    argv += ["--only", "scratch", "ssl_boxdomain", "--schedules", "1x", "--opts", *TOY_OPTS]
    argv += ["--stage-opts", "ssl", *TINY_SSL_STAGE, "--stage-opts", "ssl_boxdomain", *TINY_BOX_STAGE]
    argv += ["DATASETS.PROPOSAL_FILES_TRAIN", f"('{proposals}',)"]
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    # Each stage trained from what the study file says, and each conversion was checked.
    ssl = yaml.safe_load((out / "pretrain" / "ssl" / "config.yaml").read_text())
    assert ssl["MODEL"]["META_ARCHITECTURE"] == "ImageDomainPretrainer" and ssl["MODEL"]["WEIGHTS"] == ""
    box = yaml.safe_load((out / "pretrain" / "ssl_boxdomain" / "config.yaml").read_text())
    assert box["MODEL"]["BOX_DOMAIN"]["DETECTOR_WEIGHTS"] == str(out / "weights" / "stage_ssl_boxdomain.pth")
    report = json.loads((out / "weights" / "stage_ssl_boxdomain.json").read_text())
    assert report  # the conversion's report of what it kept, beside the weights
    row = yaml.safe_load((out / "ssl_boxdomain_1x" / "config.yaml").read_text())
    assert row["MODEL"]["WEIGHTS"] == str(out / "weights" / "init_ssl_boxdomain.pth")
    assert row["SOLVER"]["BASE_LR"] == 0.03 and row["SOLVER"]["MAX_ITER"] == 4
    # The table has both rows, each with its final AP; the stages are listed with their status.
    table = (out / "init_study.md").read_text()
    with open(out / "init_study.json") as f:
        runs = {r["init"]: r for r in json.load(f)["runs"]}
    assert set(runs) == {"scratch", "ssl_boxdomain"} and all(r["status"] == "done" for r in runs.values())
    assert "| ssl | scratch |" in table and "| ssl_boxdomain | stage:ssl |" in table
    assert (out / "init_study.png").is_file()
