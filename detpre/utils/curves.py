"""Read metric curves from Detectron2 runs and draw them on one figure.

*Rethinking ImageNet Pre-training*'s central figure is AP against training iterations for
random initialization and pre-training, several schedules on one plot. Detectron2 already
records what it needs: ``metrics.json`` in a run's output directory (JSON lines written by
``JSONWriter``), where evaluation results appear as keys such as ``bbox/AP`` on the
iterations at which the ``EvalHook`` ran, and ``config.yaml`` beside it with the batch size.
This module only reads those files back and plots them.
"""

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

logger = logging.getLogger(__name__)

__all__ = ["Curve", "RunSpec", "metric_series", "plot_curves", "read_ims_per_batch", "read_metrics"]

METRICS_FILE = "metrics.json"


def metrics_path(run: str) -> str:
    """``run`` if it is a file, else ``run/metrics.json``; a clear error if neither exists."""
    path = os.path.join(run, METRICS_FILE) if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No metrics file at {path}: give a Detectron2 output directory (holding "
            f"{METRICS_FILE}) or the path of a {METRICS_FILE}."
        )
    return path


def read_metrics(run: str) -> List[Dict]:
    """The records of a run's ``metrics.json``, one dict per line, in file order.

    A last line cut short (a run killed while writing) is skipped with a warning; any
    other line that is not a JSON object is an error naming the file and line.
    """
    path = metrics_path(run)
    with open(path) as f:
        lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError as e:
            if i == len(lines) - 1:
                logger.warning("Skipping the incomplete last line %d of %s.", number, path)
                break
            raise ValueError(f"{path}, line {number}: not a JSON object ({e}).") from None
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
            raise ValueError(f"{path}, line {number}: expected a JSON object with an integer 'iteration'.")
        records.append(record)
    return records


def metric_series(run: str, metric: str) -> List[Tuple[int, float]]:
    """``(iterations trained, value)`` of ``metric`` in a run, sorted by iteration.

    Detectron2 logs a value put during step ``i`` (0-based) at iteration ``i``: an
    evaluation after the 100th step reads 99, and is returned as 100, so that the x axis
    reads "iterations trained". The evaluation that ``EvalHook`` runs after training is
    logged at the iteration count itself (``after_train`` sets the storage's iteration to
    ``max_iter``), past the last step that logged an ``lr``; it is returned as logged.
    If an iteration appears more than once (a run resumed over its own past), the last
    value written wins, as it is the one the resumed run computed.
    """
    records = read_metrics(run)
    steps = [r["iteration"] for r in records if "lr" in r]
    last_step = max(steps) if steps else None
    values: Dict[int, float] = {}
    for record in records:
        if metric in record:
            it = record["iteration"]
            after_training = last_step is not None and it > last_step
            values[it if after_training else it + 1] = float(record[metric])
    if not values:
        keys = sorted({k for r in records for k in r} - {"iteration"})
        raise KeyError(
            f"{metrics_path(run)} has no metric {metric!r}. Available: {', '.join(keys) or 'none'}"
            + (
                ""
                if any("/AP" in k for k in keys)
                else " (no evaluation results: was TEST.EVAL_PERIOD 0 and the run stopped before its final evaluation?)"
            )
        )
    return sorted(values.items())


def read_ims_per_batch(run: str) -> int:
    """``SOLVER.IMS_PER_BATCH`` of a run, from the ``config.yaml`` Detectron2 saves beside its metrics."""
    path = os.path.join(os.path.dirname(metrics_path(run)), "config.yaml")
    try:
        with open(path) as f:
            ims = yaml.safe_load(f)["SOLVER"]["IMS_PER_BATCH"]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No {path}: images seen are computed from the run's SOLVER.IMS_PER_BATCH, which "
            "Detectron2 saves there; plot against iterations instead."
        ) from None
    except (KeyError, TypeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read SOLVER.IMS_PER_BATCH ({e!r}).") from None
    if not isinstance(ims, int) or ims <= 0:
        raise ValueError(f"{path}: SOLVER.IMS_PER_BATCH is {ims!r}, expected a positive integer.")
    return ims


@dataclass(frozen=True)
class RunSpec:
    """A run to plot: its directory (or metrics file) and the label of its curve."""

    path: str
    label: str

    @classmethod
    def parse(cls, text: str) -> "RunSpec":
        """``DIR`` or ``DIR:LABEL``; a path that exists is never split at a colon."""
        if os.path.exists(text) or ":" not in text:
            path, label = text, ""
        else:
            path, _, label = text.rpartition(":")
        path = path.rstrip(os.sep) or path
        if os.path.basename(path) == METRICS_FILE:
            default = os.path.basename(os.path.dirname(os.path.abspath(path)))
        else:
            default = os.path.basename(os.path.abspath(path))
        return cls(path, label or default)


@dataclass(frozen=True)
class Curve:
    label: str
    points: Sequence[Tuple[float, float]]


def run_curve(spec: RunSpec, metric: str, x_axis: str = "iterations") -> Curve:
    """The curve of ``metric`` for one run, x in iterations or in images seen."""
    series = metric_series(spec.path, metric)
    if x_axis == "images":
        ims = read_ims_per_batch(spec.path)
        series = [(it * ims, v) for it, v in series]
    elif x_axis != "iterations":
        raise ValueError(f"Unknown x axis {x_axis!r}: expected 'iterations' or 'images'.")
    return Curve(spec.label, series)


def plot_curves(
    curves: Iterable[Curve],
    output: str,
    xlabel: str = "iterations",
    ylabel: str = "bbox/AP",
    title: Optional[str] = None,
) -> str:
    """Draw ``curves`` on one figure and save it to ``output`` (format from its suffix)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    curves = list(curves)
    if not curves:
        raise ValueError("No curves to plot.")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for curve in curves:
        xs, ys = zip(*curve.points)
        ax.plot(xs, ys, marker="o", markersize=3, label=curve.label)
        finite = [(x, y) for x, y in curve.points if not math.isnan(y)]
        if finite:  # the final value, as the paper's figure annotates each curve
            ax.annotate(f"{finite[-1][1]:.1f}", finite[-1], textcoords="offset points", xytext=(4, 0), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.margins(x=0.08)  # room for the final-value labels
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
