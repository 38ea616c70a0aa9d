"""AP-vs-iteration curves read back from Detectron2's metrics.json and drawn on one figure."""

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from detpre.utils.curves import RunSpec, metric_series, read_ims_per_batch, read_metrics, run_curve

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
    assert (
        main(
            [
                "--runs",
                f"{scratch}:random init",
                f"{pretrained}:ImageNet",
                "--metric",
                "bbox/AP",
                "--x",
                "images",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(output)
    image = cv2.imread(str(output))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 10  # something was drawn


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
