"""AP-vs-iteration curves read back from Detectron2's metrics.json and drawn on one figure."""

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from matplotlib.text import Text

from detpre.utils.curves import RunSpec, draw_curves, read_ims_per_batch, run_curve
from detpre.utils.metrics import metric_series, read_metrics
from kaisteval.figures import FINAL_VALUE_GID, PALETTE, finish, render_rgb

from conftest import load_tool

main = load_tool("plot_curves").main

from conftest import REPO  # noqa: E402


def write_run(directory: Path, evals, ims_per_batch=None, period=20, extra_lines=(), final=None):
    """A run directory as Detectron2 writes it: training scalars every ``period`` steps,
    evaluation results (``bbox/AP``...) on the steps of ``evals`` {0-based step: AP}, and,
    with ``final`` = (max_iter, AP), the evaluation after training, logged at max_iter."""
    directory.mkdir(parents=True)
    last = max(evals) if final is None else final[0] - 1
    lines = []
    for it in range(period - 1, last + 1, period):
        lines.append({"iteration": it, "total_loss": 2.0 / (it + 1), "lr": 0.02})
    evals = dict(evals)
    if final is not None:
        evals[final[0]] = final[1]
    for it, ap in evals.items():
        lines.append({"iteration": it, "bbox/AP": ap, "bbox/AP50": min(100.0, 2 * ap), "bbox/AP-circle": ap})
    lines.sort(key=lambda r: r["iteration"])
    text = "".join(json.dumps(r) + "\n" for r in lines) + "".join(extra_lines)
    (directory / "metrics.json").write_text(text)
    if ims_per_batch is not None:
        (directory / "config.yaml").write_text(f"SOLVER:\n  IMS_PER_BATCH: {ims_per_batch}\n  BASE_LR: 0.02\n")
    return directory


def test_series_is_exactly_the_evaluations(tmp_path):
    # Evaluations after steps 100 and 200 (logged at 99, 199), and after training (at 300).
    run = write_run(tmp_path / "run", {99: 5.0, 199: 12.5}, final=(300, 20.25))
    assert metric_series(str(run), "bbox/AP") == [(100, 5.0), (200, 12.5), (300, 20.25)]
    assert metric_series(str(run / "metrics.json"), "bbox/AP50") == [(100, 10.0), (200, 25.0), (300, 40.5)]
    # Training scalars are series too.
    assert metric_series(str(run), "total_loss")[0] == (20, 2.0 / 20)


def test_resumed_run_keeps_the_last_value_of_a_repeated_iteration(tmp_path):
    run = write_run(
        tmp_path / "run",
        {99: 5.0, 199: 12.5},
        extra_lines=[
            json.dumps({"iteration": 199, "bbox/AP": 13.0}) + "\n",
            json.dumps({"iteration": 299, "lr": 0.002, "bbox/AP": float("nan")}) + "\n",
        ],
    )
    series = metric_series(str(run), "bbox/AP")
    assert series[:2] == [(100, 5.0), (200, 13.0)]
    assert series[2][0] == 300 and math.isnan(series[2][1])


def test_missing_metric_names_the_file_and_lists_keys(tmp_path):
    run = write_run(tmp_path / "run", {99: 5.0})
    with pytest.raises(KeyError) as e:
        metric_series(str(run), "segm/AP")
    message = e.value.args[0]
    assert str(run / "metrics.json") in message
    assert "bbox/AP50" in message and "total_loss" in message


def test_run_without_evaluations_hints_at_eval_period(tmp_path):
    run = tmp_path / "noeval"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"iteration": 19, "total_loss": 1.0}) + "\n")
    with pytest.raises(KeyError, match="EVAL_PERIOD"):
        metric_series(str(run), "bbox/AP")


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        read_metrics(str(tmp_path / "nowhere"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"iteration": 1}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.json, line 2"):
        read_metrics(str(bad))
    (bad / "metrics.json").write_text('{"iteration": 1}\n["a list"]\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(str(bad))


def test_truncated_last_line_of_a_killed_run_is_skipped(tmp_path):
    run = write_run(tmp_path / "run", {99: 5.0}, extra_lines=['{"iteration": 119, "bbox/A'])
    assert metric_series(str(run), "bbox/AP") == [(100, 5.0)]


def test_images_seen_axis_reads_the_batch_from_config(tmp_path):
    run = write_run(tmp_path / "run", {99: 5.0, 199: 7.0}, ims_per_batch=16)
    assert read_ims_per_batch(str(run)) == 16
    curve = run_curve(RunSpec(str(run), "r"), "bbox/AP", x_axis="images")
    assert list(curve.points) == [(1600, 5.0), (3200, 7.0)]
    no_config = write_run(tmp_path / "noconfig", {99: 5.0})
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        run_curve(RunSpec(str(no_config), "r"), "bbox/AP", x_axis="images")


def test_run_spec_labels(tmp_path):
    run = write_run(tmp_path / "scratch_6x", {99: 1.0})
    assert RunSpec.parse(str(run)) == RunSpec(str(run), "scratch_6x")
    assert RunSpec.parse(f"{run}:random init") == RunSpec(str(run), "random init")
    assert RunSpec.parse(str(run / "metrics.json")).label == "scratch_6x"
    # A directory whose name has a colon is a path, not a label.
    odd = write_run(tmp_path / "a:b", {99: 1.0})
    assert RunSpec.parse(str(odd)) == RunSpec(str(odd), "a:b")


def test_tool_plots_several_runs(tmp_path, capsys):
    scratch = write_run(tmp_path / "scratch", {99: 2.0, 199: 10.0, 299: 18.0}, ims_per_batch=8)
    pretrained = write_run(tmp_path / "pretrained", {49: 8.0, 99: 15.0}, ims_per_batch=16)
    output = tmp_path / "figs" / "curves.png"
    runs = [f"{scratch}:random init", f"{pretrained}:ImageNet"]
    assert main(["--runs", *runs, "--metric", "bbox/AP", "--x", "images", "--output", str(output)]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    # The file is the figure draw_curves makes of these runs, which is what is checked below.
    curves = [run_curve(RunSpec.parse(r), "bbox/AP", x_axis="images") for r in runs]
    fig = finish(draw_curves(curves, xlabel="images seen", ylabel="bbox/AP", metric="bbox/AP"))
    assert (cv2.imread(str(output))[:, :, ::-1] == render_rgb(fig)).all()

    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[800, 1600, 2400], [800, 1600]]
    assert [line.get_color() for line in lines] == list(PALETTE[:2])  # one colour per run
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["random init", "ImageNet"]
    assert ax.get_legend().get_window_extent().x0 > ax.get_window_extent().x1  # off the data
    labels = [t for t in ax.texts if t.get_gid() == FINAL_VALUE_GID]
    assert [(t.get_text(), t.get_color()) for t in labels] == [("18.0", PALETTE[0]), ("15.0", PALETTE[1])]
    assert not Text.get_window_extent(labels[0]).overlaps(Text.get_window_extent(labels[1]))
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(t == int(t) for t in ticks)
    assert all("." not in t.get_text() for t in ax.get_xticklabels())
    assert ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] <= 100.0


def test_percentages_stop_at_100_and_a_miss_rate_reads_lower_is_better(tmp_path):
    run = tmp_path / "kaist"
    run.mkdir()
    records = [{"iteration": 9, "lr": 0.01}, {"iteration": 9, "kaist/MR_all": 100.0, "bbox/AP": 99.9}]
    records += [{"iteration": 19, "lr": 0.01, "kaist/MR_all": 62.5, "bbox/AP": 100.0}]
    (run / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    mr = finish(draw_curves([run_curve(RunSpec(str(run), "r"), "kaist/MR_all")], ylabel="kaist/MR_all")).axes[0]
    assert mr.get_ylim() == (0.0, 100.0) and mr.get_yscale() == "linear"
    assert mr.get_ylabel() == "kaist/MR_all (lower is better)"
    (line,) = mr.get_lines()
    assert list(line.get_xdata()) == [10, 20] and not line.get_clip_on()  # the 100% point is drawn whole
    ap = finish(draw_curves([run_curve(RunSpec(str(run), "r"), "bbox/AP")], ylabel="bbox/AP")).axes[0]
    assert ap.get_ylim() == (0.0, 100.0) and ap.get_ylabel() == "bbox/AP"  # not 104
    # A loss is not a percentage: its axis is matplotlib's, and its lines are clipped as usual.
    loss = finish(draw_curves([run_curve(RunSpec(str(run), "r"), "lr")], ylabel="lr")).axes[0]
    assert loss.get_lines()[0].get_clip_on()


def test_tool_reports_missing_metric(tmp_path, capsys):
    run = write_run(tmp_path / "run", {99: 5.0})
    assert main(["--runs", str(run), "--metric", "bbox/APx", "--output", str(tmp_path / "c.png")]) == 2
    message = capsys.readouterr().err
    assert "bbox/APx" in message and "bbox/AP50" in message and "metrics.json" in message
    assert not (tmp_path / "c.png").exists()


@pytest.mark.slow
def test_script_runs_from_the_command_line(tmp_path):
    run = write_run(tmp_path / "run", {99: 5.0, 199: 6.0})
    output = tmp_path / "c.png"
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plot_curves.py"), "--runs", str(run), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert cv2.imread(str(output)) is not None


def test_figures_never_use_pyplot_nor_switch_the_backend(tmp_path):
    """A host program's matplotlib backend is its own: drawing and saving every kind of figure
    neither imports pyplot nor calls matplotlib.use."""
    code = f"""
import sys, matplotlib
def refuse(*args, **kwargs):
    raise SystemExit("matplotlib.use was called")
matplotlib.use = refuse
from kaisteval.figures import new_figure, save_figure
from detpre.utils.curves import Curve, plot_curves
from detpre.analysis import plots
import detpre.utils.kaist_visualizer
import kaisteval.plot
fig = new_figure(2, 2)
fig.subplots().plot([0, 1], [0, 1])
save_figure(fig, {str(tmp_path / "a.png")!r})
plot_curves([Curve("a", [(1, 2.0), (2, 3.0)])], {str(tmp_path / "b.png")!r})
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
