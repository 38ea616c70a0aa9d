"""A run's ``metrics.json``, read back: the one reader of the file Detectron2's ``JSONWriter`` writes.

``metrics.json`` holds one JSON object a line, each with the ``iteration`` it was logged at:
training scalars (``total_loss``, ``lr``) every ``LOG_PERIOD`` steps, and evaluation results
(``bbox/AP``, ``kaist/MR_all``) at the iterations at which ``EvalHook`` ran. Every tool that
draws or tabulates a run (``tools/plot_curves.py``, ``tools/demo.py``, the init study) reads
it here, so that they agree on what a damaged file, a missing file and an iteration mean.
"""

import json
import logging
import os
from typing import Any, Dict, List, Sequence, Tuple

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS_FILE",
    "is_miss_rate",
    "is_percentage",
    "metric_series",
    "metrics_path",
    "read_metrics",
    "series_from_records",
]

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


def read_metrics(run: str, missing_ok: bool = False) -> List[Dict[str, Any]]:
    """The records of a run's ``metrics.json`` (``run`` is the run's folder or the file), one
    dict per line, in file order.

    A run that has not written the file yet is a ``FileNotFoundError``, or no records with
    ``missing_ok`` (a study asking every run of its matrix, started or not, how far it got).
    A last line cut short (a run killed while writing) is skipped with a warning; any other
    line that is not a JSON object with an integer ``iteration`` is a ``ValueError`` naming
    the file and line.
    """
    try:
        path = metrics_path(run)
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
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


def series_from_records(records: Sequence[Dict[str, Any]], metric: str) -> List[Tuple[int, float]]:
    """``(iterations trained, value)`` of ``metric`` in a run's records, sorted by iteration.

    Detectron2 logs a value put during step ``i`` (0-based) at iteration ``i``: an
    evaluation after the 100th step reads 99, and is returned as 100, so that the x axis
    reads "iterations trained". The evaluation that ``EvalHook`` runs after training is
    logged at the iteration count itself (``after_train`` sets the storage's iteration to
    ``max_iter``), past the last step that logged an ``lr``; it is returned as logged.
    If an iteration appears more than once (a run resumed over its own past), the last
    value written wins, as it is the one the resumed run computed. Empty if no record
    holds ``metric``.
    """
    steps = [r["iteration"] for r in records if "lr" in r]
    last_step = max(steps) if steps else None
    values: Dict[int, float] = {}
    for record in records:
        if metric in record:
            it = record["iteration"]
            after_training = last_step is not None and it > last_step
            values[it if after_training else it + 1] = float(record[metric])
    return sorted(values.items())


def metric_series(run: str, metric: str) -> List[Tuple[int, float]]:
    """:func:`series_from_records` of the run's ``metrics.json``; a ``KeyError`` naming the file
    and the keys it has when no record holds ``metric``."""
    records = read_metrics(run)
    series = series_from_records(records, metric)
    if not series:
        keys = sorted({k for r in records for k in r} - {"iteration"})
        raise KeyError(
            f"{metrics_path(run)} has no metric {metric!r}. Available: {', '.join(keys) or 'none'}"
            + (
                ""
                if any("/AP" in k for k in keys)
                else " (no evaluation results: was TEST.EVAL_PERIOD 0 and the run stopped before its final evaluation?)"
            )
        )
    return series


def _name(metric: str) -> str:
    return metric.rsplit("/", 1)[-1]


def is_miss_rate(metric: str) -> bool:
    """Whether ``metric`` is a KAIST log-average miss rate (``kaist/MR_all``, ``MR_night``): in
    percent, lower is better."""
    return _name(metric).startswith("MR")


def is_percentage(metric: str) -> bool:
    """Whether ``metric`` is in percent, 0 to 100: an AP of Detectron2's evaluators
    (``bbox/AP``, ``bbox/AP50``, ``segm/APs``, ``bbox_iou/AP70``) or a miss rate."""
    return _name(metric).startswith("AP") or is_miss_rate(metric)
