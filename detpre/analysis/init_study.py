"""The weight-initialization study: which initialization should a detector start from, on my data?

*Rethinking ImageNet Pre-training* (He, Girshick, Dollar; Fig. 1) answers it for COCO by
training the same detector from several initializations for several schedule lengths and
drawing every run's AP against the images seen. This module runs that matrix on any
dataset config: named initializations (``NAME=SPEC``) x ``kx`` schedules, each cell one
``tools/train_net.py`` process in its own folder ``OUT/<init>_<schedule>/``.

Such a study runs for days and is interrupted, so every step is idempotent:

* a cell whose folder holds ``model_final.pth`` and the final evaluation is skipped;
  any other cell is launched with ``--resume`` (Detectron2 starts from ``MODEL.WEIGHTS``
  when the folder has no checkpoint yet, and from the last checkpoint otherwise);
* every cell's config is resolved in this process before anything runs, exactly as the
  launcher resolves it, so a bad key fails the study at once rather than hours in; a
  folder whose saved ``config.yaml`` differs from it is refused (a study that silently
  mixed two configs would compare nothing);
* the table and the curves are read back from the runs' ``metrics.json`` files, so they can
  be redrawn at any time from whatever has finished.

An initialization SPEC is ``scratch`` (``MODEL.WEIGHTS ""``: the config's own from-scratch
settings) or a checkpoint path / URL. Detectron2 ``.pkl`` / ``.pth`` checkpoints (model-zoo
ImageNet or COCO weights, a detpre box-domain pre-training) are given to ``MODEL.WEIGHTS``
as they are; a torchvision or timm ResNet state dict is converted on the fly
(:mod:`detpre.checkpoint.convert`) into ``OUT/weights/<init>.pkl``, and the config values
those weights need (RGB input, ImageNet pixel statistics, ``STRIDE_IN_1X1 False``, depth
and width) are added to that initialization's overrides.
"""

import csv
import io
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml
from detectron2.config import CfgNode
from detectron2.utils.file_io import PathManager
from matplotlib.figure import Figure

from kaisteval.figures import save_figure

from ..checkpoint.convert import convert_resnet_state_dict, read_state_dict, resnet_config, save_detectron2_checkpoint
from ..config import load_cfg
from ..config.loader import as_overrides, flatten_keys
from ..solver.schedule import parse_schedule
from ..utils.curves import Curve, draw_curves
from ..utils.file_io import atomic_write
from ..utils.metrics import METRICS_FILE, is_miss_rate, read_metrics, series_from_records

logger = logging.getLogger(__name__)

__all__ = [
    "SCRATCH",
    "Init",
    "Weights",
    "RunPlan",
    "Cell",
    "InitStudy",
    "prepare_weights",
    "final_metric",
    "is_finished",
    "markdown_table",
    "draw_study",
    "plot_study",
    "write_results",
]

SCRATCH = "scratch"
FINAL_CHECKPOINT = "model_final.pth"
# Keys the study sets itself in every run; an override of them would break the matrix.
_STUDY_KEYS = ("OUTPUT_DIR", "MODEL.WEIGHTS", "SOLVER.SCHEDULE.NAME")
# Detectron2's model-zoo names, which its own loader resolves and reads.
_MODEL_ZOO_SCHEMES = ("detectron2://", "catalog://")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# Parameter names that only a Detectron2 checkpoint (a whole detector or a bare
# Detectron2 ResNet, e.g. one written by tools/convert_weights.py) has.
_DETECTRON2_PREFIXES = ("backbone.", "proposal_generator.", "roi_heads.", "stem.", "res2.")


# ----------------------------------------------------------------- initializations
@dataclass(frozen=True)
class Init:
    """One row of the study: a name, where its weights come from, and its own settings.

    ``config_file`` replaces the study's config for this initialization (typically a file
    with ``_BASE_`` the study's config that switches to FrozenBN / ``FREEZE_AT 2`` for
    fine-tuning BN-trained ImageNet weights); ``opts`` are ``KEY VALUE`` overrides applied
    after the study's own.
    """

    name: str
    spec: str
    config_file: str = ""
    opts: Tuple[str, ...] = ()

    @classmethod
    def parse(cls, entry: str) -> "Init":
        """``NAME=SPEC`` -> Init (SPEC is ``scratch`` or a checkpoint path / URL)."""
        name, sep, spec = entry.partition("=")
        name, spec = name.strip(), spec.strip()
        if not sep or not name or not spec:
            raise ValueError(f"--init {entry!r}: expected NAME=SPEC, e.g. scratch=scratch or imagenet=R-50.pkl")
        check_name(name, f"--init {entry!r}")
        return cls(name=name, spec=spec)

    @property
    def is_scratch(self) -> bool:
        return self.spec == SCRATCH


def check_name(name: str, where: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{where}: initialization name {name!r} must start with a letter or digit and contain only "
            "letters, digits and _ . + - (it names the run folders)"
        )


@dataclass(frozen=True)
class Weights:
    """What an initialization puts in a run's config: ``MODEL.WEIGHTS`` and the values the
    weights need (non-empty only for converted torchvision / timm weights)."""

    path: str
    opts: Tuple[str, ...] = ()


def _is_url(spec: str) -> bool:
    return "://" in spec


def prepare_weights(init: Init, weights_dir: str) -> Weights:
    """Resolve ``init``'s SPEC into ``MODEL.WEIGHTS``, converting foreign state dicts.

    ``.pkl`` files and ``detectron2://`` / ``catalog://`` names (Detectron2's model zoo)
    go to Detectron2's loader untouched;
    other files (URLs are downloaded through Detectron2's ``PathManager`` cache) are opened
    to tell a Detectron2 checkpoint from a torchvision / timm ResNet by their parameter names.
    """
    if init.is_scratch:
        return Weights(path="")
    spec = init.spec if _is_url(init.spec) else os.path.abspath(os.path.expanduser(init.spec))
    if spec.endswith(".pkl") or spec.startswith(_MODEL_ZOO_SCHEMES):
        if not _is_url(spec) and not os.path.isfile(spec):
            raise FileNotFoundError(f"--init {init.name}={init.spec}: checkpoint {spec} does not exist")
        return Weights(path=spec)
    local = PathManager.get_local_path(spec) if _is_url(spec) else spec
    if not os.path.isfile(local):
        raise FileNotFoundError(f"--init {init.name}={init.spec}: checkpoint {spec} does not exist")
    try:
        state_dict = read_state_dict(local, "torchvision")
    except Exception as e:  # any unpickling error of a file that is not a checkpoint
        raise ValueError(f"--init {init.name}={init.spec}: cannot read {local} as a checkpoint ({e})") from e
    names = list(state_dict)
    if any(n.startswith(_DETECTRON2_PREFIXES) for n in names):
        return Weights(path=spec)
    if "conv1.weight" in names and any(n.startswith("layer1.") for n in names):
        converted, dropped = convert_resnet_state_dict(state_dict)
        values = resnet_config(converted)
        out = os.path.join(weights_dir, f"{init.name}.pkl")
        save_detectron2_checkpoint(converted, out, author=f"torchvision/timm via detpre: {init.spec}")
        logger.info(
            "--init %s: converted the torchvision/timm ResNet-%d in %s (%d tensors; %d left out: classifier, "
            "BN counters) to %s",
            init.name,
            values["MODEL.RESNETS.DEPTH"],
            spec,
            len(converted),
            len(dropped),
            out,
        )
        return Weights(path=out, opts=tuple(as_overrides(values)))
    raise ValueError(
        f"--init {init.name}={init.spec}: {local} holds neither a Detectron2 checkpoint (names such as "
        f"'backbone.bottom_up.res2...' or 'res2...') nor a torchvision/timm ResNet ('conv1.weight', "
        f"'layer1...'); its first names are {names[:5]}"
    )


# ------------------------------------------------------------------------- runs
@dataclass
class RunPlan:
    """One cell of the matrix, resolved: its folder, launcher arguments and config."""

    init: Init
    schedule: str
    output_dir: str
    argv: List[str]  # tools/train_net.py's arguments
    cfg: CfgNode

    @property
    def name(self) -> str:
        return f"{self.init.name}_{self.schedule}"

    @property
    def images_per_iter(self) -> int:
        return int(self.cfg.SOLVER.IMS_PER_BATCH)


def is_finished(output_dir: str, max_iter: int) -> bool:
    """``model_final.pth`` is there and the final evaluation was written.

    Detectron2 writes the evaluation after the last step at iteration ``MAX_ITER`` (training
    steps are ``0 .. MAX_ITER - 1``), so a record at ``MAX_ITER`` or later is the final one.
    """
    if not os.path.isfile(os.path.join(output_dir, FINAL_CHECKPOINT)):
        return False
    return any(r["iteration"] >= max_iter for r in read_metrics(output_dir, missing_ok=True))


def final_metric(records: Sequence[Dict[str, Any]], metric: str) -> Optional[Tuple[int, float]]:
    """(iteration, value) of the last record that holds ``metric``; None if none does."""
    for record in reversed(records):
        if metric in record:
            return int(record["iteration"]), float(record[metric])
    return None


# ------------------------------------------------------------------------ table
@dataclass
class Cell:
    """The outcome of one run, as written in ``init_study.json``."""

    init: str
    schedule: str
    output_dir: str
    status: str  # "done", "failed", "stopped" or "not run"
    metric: str
    value: Optional[float] = None
    iteration: Optional[int] = None
    max_iter: int = 0
    images_per_iter: int = 0
    images_seen: int = 0
    curve: List[Tuple[int, float]] = field(default_factory=list)  # (images seen, value)
    error: str = ""


def _format(value: Optional[float], digits: int) -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(
    cells: Sequence[Cell], inits: Sequence[str], schedules: Sequence[str], metric: str, digits: int = 2
) -> str:
    """Rows: initializations; columns: schedules; each cell the run's final ``metric``."""
    value = {(c.init, c.schedule): c.value for c in cells}
    lines = [
        "| " + " | ".join([metric, *schedules]) + " |",
        "|:--" + "|--:" * len(schedules) + "|",
    ]
    for init in inits:
        lines.append("| " + " | ".join([init, *(_format(value.get((init, s)), digits) for s in schedules)]) + " |")
    return "\n".join(lines) + "\n"


def _json_number(value: Optional[float]) -> Optional[float]:
    return None if value is None or math.isnan(value) else value


def write_results(
    cells: Sequence[Cell], inits: Sequence[str], schedules: Sequence[str], metric: str, output_dir: str
) -> Dict[str, str]:
    """Write the table as ``init_study.md`` / ``.csv`` (rows inits, columns schedules) and every
    cell's details as ``init_study.json``; return the paths by extension."""
    paths = {ext: os.path.join(output_dir, f"init_study.{ext}") for ext in ("md", "csv", "json")}
    with atomic_write(paths["md"]) as f:
        f.write(markdown_table(cells, inits, schedules, metric))
    value = {(c.init, c.schedule): c.value for c in cells}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["init", *schedules])
    for init in inits:
        writer.writerow([init, *("" if value.get((init, s)) is None else repr(value[(init, s)]) for s in schedules)])
    with atomic_write(paths["csv"]) as f:
        f.write(buf.getvalue())
    records = []
    for c in cells:
        record = asdict(c)
        record["value"] = _json_number(c.value)
        record["curve"] = [[x, _json_number(y)] for x, y in c.curve]
        records.append(record)
    with atomic_write(paths["json"]) as f:
        json.dump({"metric": metric, "inits": list(inits), "schedules": list(schedules), "runs": records}, f, indent=1)
    return paths


def draw_study(cells: Sequence[Cell], title: str = "") -> Optional[Figure]:
    """Every run's curve against the images it has seen, on one figure (the paper's Fig. 1).

    As in the paper, a colour is an initialization and a line style and marker a schedule,
    each curve ends in its final value and the legend (both levels) stands outside the
    data. Images seen rather than iterations, so that runs of different lengths and batch
    sizes share the x axis. A KAIST miss rate (``kaist/MR_all``) is drawn on the toolbox's
    log axis, lower being better. None when no run has evaluated yet.
    """
    curves = [Curve(f"{c.init} {c.schedule}", c.curve, group=c.init, subgroup=c.schedule) for c in cells if c.curve]
    if not curves:
        return None
    metric = cells[0].metric
    return draw_curves(
        curves,
        xlabel="images seen",
        ylabel=metric,
        metric=metric,
        title=title or f"{metric}: initializations x schedules",
        log_miss_rate=is_miss_rate(metric),
        group_title="initialization",
        subgroup_title="schedule",
    )


def plot_study(cells: Sequence[Cell], path: str, title: str = "") -> Optional[str]:
    """:func:`draw_study` written to the PNG ``path``; returns it, or None when no run has
    evaluated yet."""
    fig = draw_study(cells, title)
    return None if fig is None else save_figure(fig, path)


# ------------------------------------------------------------------------ study
def config_differences(saved_yaml: str, cfg: CfgNode) -> List[str]:
    """``KEY: saved -> now`` for every key on which a run folder's ``config.yaml`` and ``cfg`` differ."""
    with open(saved_yaml) as f:
        saved = flatten_keys(yaml.safe_load(f) or {})
    now = flatten_keys(yaml.safe_load(cfg.dump()))
    return [
        f"{k}: {saved.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}"
        for k in sorted(set(saved) | set(now))
        if saved.get(k) != now.get(k)
    ]


class InitStudy:
    """Initializations x schedules on one dataset config, run by ``tools/train_net.py``.

    Args:
        config_file: the dataset/model config of every run (an initialization may replace it).
        inits: the rows; names must be unique.
        schedules: the columns, ``kx`` names resolved by ``SOLVER.SCHEDULE`` (``"1x"``, ``"0.5x"``).
        output_dir: the study folder: one sub-folder per run, ``weights/``, the table and plot.
        opts: ``KEY VALUE`` overrides of every run (before each initialization's own).
        metric: the ``metrics.json`` key of the table and curves (``bbox/AP``; a KAIST MR key).
        launcher_args: passed to every ``train_net.py`` (``--num-gpus 8``, ``--dist-url ...``).
    """

    def __init__(
        self,
        config_file: str,
        inits: Sequence[Init],
        schedules: Sequence[str],
        output_dir: str,
        opts: Sequence[str] = (),
        metric: str = "bbox/AP",
        launcher_args: Sequence[str] = (),
    ):
        if not inits:
            raise ValueError("an init study needs at least one --init NAME=SPEC")
        if not schedules:
            raise ValueError("an init study needs at least one schedule (--schedules 1x 2x ...)")
        names = [i.name for i in inits]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"initialization names must be unique; repeated: {duplicates}")
        for schedule in schedules:
            parse_schedule(schedule)
        if len(set(schedules)) != len(schedules):
            raise ValueError(f"schedules must be unique; got {list(schedules)}")
        for where, o in [("the study's overrides", opts)] + [(f"--init-opts {i.name}", i.opts) for i in inits]:
            if len(o) % 2:
                raise ValueError(f"{where} must be KEY VALUE pairs; got an odd number of items: {list(o)}")
            taken = [k for k in o[::2] if k in _STUDY_KEYS]
            if taken:
                raise ValueError(f"{where} set {taken}, which the study sets itself (use --init and --schedules)")
        for path in [config_file] + [i.config_file for i in inits if i.config_file]:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file {path} does not exist")
        self.config_file = os.path.abspath(config_file)
        self.inits = list(inits)
        self.schedules = list(schedules)
        self.output_dir = os.path.abspath(output_dir)
        self.opts = list(opts)
        self.metric = metric
        self.launcher_args = list(launcher_args)

    def plan(self) -> List[RunPlan]:
        """Resolve every cell (converting weights where needed) and check existing folders.

        Raises on a config error or on a folder made with another config, before any run starts.
        """
        plans = []
        for init in self.inits:
            weights = prepare_weights(init, os.path.join(self.output_dir, "weights"))
            for schedule in self.schedules:
                out = os.path.join(self.output_dir, f"{init.name}_{schedule}")
                config_file = os.path.abspath(init.config_file or self.config_file)
                opts = [*self.opts, *weights.opts, *init.opts, "OUTPUT_DIR", out, "MODEL.WEIGHTS", weights.path]
                argv = ["--config-file", config_file, "--schedule", schedule, "--resume", *self.launcher_args, *opts]
                try:
                    cfg = load_cfg(config_file, opts, schedule=schedule)
                except (KeyError, ValueError) as e:
                    raise ValueError(f"run {init.name}_{schedule}: {e}") from e
                if not cfg.DATASETS.TEST:
                    raise ValueError(
                        f"run {init.name}_{schedule}: DATASETS.TEST is empty; the study reads each run's final "
                        "evaluation, so give the dataset to evaluate on"
                    )
                saved = os.path.join(out, "config.yaml")
                if os.path.isfile(saved):
                    diff = config_differences(saved, cfg)
                    if diff:
                        raise ValueError(
                            f"{out} holds a run of another config ({'; '.join(diff[:5])}"
                            f"{'; ...' if len(diff) > 5 else ''}): remove that folder or use another output folder"
                        )
                plans.append(RunPlan(init, schedule, out, argv, cfg))
        return plans

    def run(
        self,
        train_script: str,
        plans: Optional[Sequence[RunPlan]] = None,
        log: Callable[[str], None] = print,
    ) -> List[Cell]:
        """Train every unfinished cell in turn, then collect the table.

        Each run's output goes to ``<run>/train_stdout.log``; a run that fails is reported and
        the others still run. SIGTERM is passed to the run in progress (which saves a
        checkpoint) and stops the study after it; Ctrl-C reaches the run directly.
        """
        plans = list(plans) if plans is not None else self.plan()
        stop = threading.Event()
        outcome: Dict[str, Tuple[str, str]] = {}  # run name -> (status, why) of runs that did not finish
        for i, plan in enumerate(plans, 1):
            where = f"[{i}/{len(plans)}] {plan.name}"
            if is_finished(plan.output_dir, plan.cfg.SOLVER.MAX_ITER):
                log(f"{where}: finished, skipped")
                continue
            if stop.is_set():
                outcome[plan.name] = ("not run", "the study was stopped before this run")
                continue
            resuming = os.path.isfile(os.path.join(plan.output_dir, "last_checkpoint"))
            log(
                f"{where}: {'resuming' if resuming else 'training'} ({plan.cfg.SOLVER.MAX_ITER} iterations of "
                f"{plan.images_per_iter} images, weights: {plan.cfg.MODEL.WEIGHTS or 'none, from scratch'})"
            )
            stdout_log = os.path.join(plan.output_dir, "train_stdout.log")
            rc = _run_child([sys.executable, train_script, *plan.argv], stdout_log, stop)
            if stop.is_set():
                outcome[plan.name] = (
                    "stopped",
                    "stopped by a signal after saving a checkpoint; run the study again to resume it",
                )
                log(f"{where}: stopped; run the study again to resume")
            elif rc != 0:
                outcome[plan.name] = ("failed", f"tools/train_net.py exited with status {rc}; see {stdout_log}")
                log(f"{where}: FAILED (exit status {rc}); last lines of {stdout_log}:\n{_tail(stdout_log)}")
            elif not is_finished(plan.output_dir, plan.cfg.SOLVER.MAX_ITER):
                outcome[plan.name] = (
                    "failed",
                    f"the run ended without {FINAL_CHECKPOINT} and a final evaluation "
                    f"in {plan.output_dir}; see {stdout_log}",
                )
                log(f"{where}: FAILED: {outcome[plan.name][1]}")
        return self.collect(plans, outcome)

    def collect(self, plans: Sequence[RunPlan], outcome: Optional[Dict[str, Tuple[str, str]]] = None) -> List[Cell]:
        """Read every cell's final metric and curve back from its folder; ``outcome`` gives the
        status and reason of the runs that did not finish in this session."""
        outcome = outcome or {}
        cells = []
        for plan in plans:
            records = read_metrics(plan.output_dir, missing_ok=True)
            max_iter = int(plan.cfg.SOLVER.MAX_ITER)
            status, error = outcome.get(plan.name, ("not run", ""))
            cell = Cell(
                plan.init.name,
                plan.schedule,
                plan.output_dir,
                status=status,
                metric=self.metric,
                max_iter=max_iter,
                images_per_iter=plan.images_per_iter,
                images_seen=max_iter * plan.images_per_iter,
                error=error,
            )
            if is_finished(plan.output_dir, max_iter):
                found = final_metric(records, self.metric)
                if found is None:
                    final = next(r for r in reversed(records) if r["iteration"] >= max_iter)
                    cell.status = "failed"
                    cell.error = (
                        f"{plan.output_dir}/{METRICS_FILE} has no {self.metric!r}; its final evaluation "
                        f"has {sorted(k for k in final if k != 'iteration')} (choose one with --metric)"
                    )
                else:
                    cell.status, cell.error = "done", ""
                    cell.iteration, cell.value = found
            # Iterations trained (the final evaluation at MAX_ITER; a resumed run's repeated
            # evaluation with its latest value), as images seen.
            curve = {min(it, max_iter) * plan.images_per_iter: v for it, v in series_from_records(records, self.metric)}
            cell.curve = sorted(curve.items())
            cells.append(cell)
        return cells


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no output)"


def _run_child(command: List[str], stdout_log: str, stop: threading.Event) -> int:
    """Run ``command`` with its output appended to ``stdout_log``; return its exit status.

    Ctrl-C reaches the child directly (same process group), so this waits for it to save its
    checkpoint rather than killing it; a SIGTERM to the study is forwarded to the child and
    ``stop`` is set, so the study ends after the run has saved.
    """
    os.makedirs(os.path.dirname(stdout_log), exist_ok=True)
    children: List[subprocess.Popen] = []

    def forward(signum, frame):
        stop.set()
        for child in children:
            child.send_signal(signum)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, forward)
    try:
        with open(stdout_log, "a") as out:
            children.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
            try:
                return children[0].wait()
            except KeyboardInterrupt:
                stop.set()
                children[0].wait()  # the child got the same Ctrl-C: let it save its checkpoint
                raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def plan_summary(plans: Iterable[RunPlan], train_script: str) -> str:
    """One line per cell (status, length) and the command that trains it: ``--dry-run``'s output."""
    lines = []
    for plan in plans:
        status = (
            "finished"
            if is_finished(plan.output_dir, plan.cfg.SOLVER.MAX_ITER)
            else "resume"
            if os.path.isfile(os.path.join(plan.output_dir, "last_checkpoint"))
            else "new"
        )
        lines.append(
            f"{plan.name}: {status}, MAX_ITER {plan.cfg.SOLVER.MAX_ITER} x {plan.images_per_iter} images, "
            f"STEPS {tuple(plan.cfg.SOLVER.STEPS)}, BASE_LR {plan.cfg.SOLVER.BASE_LR:g}"
        )
        lines.append("  " + subprocess.list2cmdline([sys.executable, train_script, *plan.argv]))
    return "\n".join(lines) + "\n"
