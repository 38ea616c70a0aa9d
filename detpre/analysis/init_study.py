"""The weight-initialization study: which initialization should a detector start from, on my data?

*Rethinking ImageNet Pre-training* (He, Girshick, Dollar; Fig. 1) answers it for COCO by
training the same detector from several initializations for several schedule lengths and
drawing every run's AP against the images seen. This module runs that matrix on any
dataset config: named initializations (``NAME=SPEC``) x ``kx`` schedules, each cell one
``tools/train_net.py`` process in its own folder ``OUT/<init>_<schedule>/``.

A row may start from a pre-training stage of the study (``stage:NAME``): a
``tools/train_net.py`` run of a pre-training config (image-domain SSL, box-domain
pre-training) in ``OUT/pretrain/<stage>/``, started itself from scratch, a checkpoint or
another stage, whose ``model_final.pth`` ``tools/convert_pretrained.py`` turns into the weights
of each consumer (checked against that consumer's config) in ``OUT/weights/``. So the
target-only chain image-domain -> box-domain -> fine-tuning is three jobs, and the stage a
row shares with another trains once. :mod:`.study_jobs` runs the jobs: one after another
here, or as cluster jobs through submitit.

Such a study runs for days and is interrupted, so every step is idempotent:

* a cell whose folder holds ``model_final.pth`` and the final evaluation is skipped (a
  stage: ``model_final.pth``; a conversion: its weights file); any other run is launched
  with ``--resume`` (Detectron2 starts from ``MODEL.WEIGHTS``
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
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from detectron2.config import CfgNode
from detectron2.utils.file_io import PathManager
from matplotlib.figure import Figure

from kaisteval.figures import save_figure

from ..checkpoint.convert import convert_resnet_state_dict, read_state_dict, resnet_config, save_detectron2_checkpoint
from ..config import load_cfg
from ..config.loader import as_overrides, flatten_keys
from ..modeling.meta_arch.box_domain_weights import BOX_DOMAIN_WEIGHTS_KEY
from ..modeling.meta_arch.pretrained_weights import input_weights_key
from ..solver.schedule import parse_schedule
from ..utils.curves import Curve, draw_curves
from ..utils.file_io import atomic_write
from ..utils.metrics import METRICS_FILE, is_miss_rate, read_metrics, series_from_records
from .study_jobs import JobOutcome, SequentialLauncher, StudyJob
from .study_spec import SCRATCH, Init, Stage

logger = logging.getLogger(__name__)

__all__ = [
    "SCRATCH",
    "Init",
    "Stage",
    "Weights",
    "RunPlan",
    "StagePlan",
    "ConversionPlan",
    "StudyPlan",
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

FINAL_CHECKPOINT = "model_final.pth"
# Keys the study sets itself in every run; an override of them would break the matrix.
_STUDY_KEYS = ("OUTPUT_DIR", "MODEL.WEIGHTS", "SOLVER.SCHEDULE.NAME")
# Detectron2's model-zoo names, which its own loader resolves and reads.
_MODEL_ZOO_SCHEMES = ("detectron2://", "catalog://")
# Parameter names that only a Detectron2 checkpoint (a whole detector or a bare
# Detectron2 ResNet, e.g. one written by tools/convert_weights.py) has.
_DETECTRON2_PREFIXES = ("backbone.", "proposal_generator.", "roi_heads.", "stem.", "res2.")


# ----------------------------------------------------------------- initializations
@dataclass(frozen=True)
class Weights:
    """What an initialization puts in a run's config: ``MODEL.WEIGHTS`` and the values the
    weights need (non-empty only for converted torchvision / timm weights)."""

    path: str
    opts: Tuple[str, ...] = ()


def _is_url(spec: str) -> bool:
    return "://" in spec


def prepare_weights(entry: Union[Init, Stage], weights_dir: str) -> Weights:
    """Resolve a row's or a stage's checkpoint SPEC into weights, converting foreign state dicts.

    ``.pkl`` files and ``detectron2://`` / ``catalog://`` names (Detectron2's model zoo)
    go to Detectron2's loader untouched;
    other files (URLs are downloaded through Detectron2's ``PathManager`` cache) are opened
    to tell a Detectron2 checkpoint from a torchvision / timm ResNet by their parameter names.
    """
    where = f"--init {entry.name}={entry.spec}" if isinstance(entry, Init) else f"stage {entry.name}: {entry.spec}"
    if entry.spec == SCRATCH:
        return Weights(path="")
    spec = entry.spec if _is_url(entry.spec) else os.path.abspath(os.path.expanduser(entry.spec))
    if spec.endswith(".pkl") or spec.startswith(_MODEL_ZOO_SCHEMES):
        if not _is_url(spec) and not os.path.isfile(spec):
            raise FileNotFoundError(f"{where}: checkpoint {spec} does not exist")
        return Weights(path=spec)
    local = PathManager.get_local_path(spec) if _is_url(spec) else spec
    if not os.path.isfile(local):
        raise FileNotFoundError(f"{where}: checkpoint {spec} does not exist")
    try:
        state_dict = read_state_dict(local, "torchvision")
    except Exception as e:  # any unpickling error of a file that is not a checkpoint
        raise ValueError(f"{where}: cannot read {local} as a checkpoint ({e})") from e
    names = list(state_dict)
    if any(n.startswith(_DETECTRON2_PREFIXES) for n in names):
        return Weights(path=spec)
    if "conv1.weight" in names and any(n.startswith("layer1.") for n in names):
        converted, dropped = convert_resnet_state_dict(state_dict)
        values = resnet_config(converted)
        stem = entry.name if isinstance(entry, Init) else f"stage_{entry.name}"
        out = os.path.join(weights_dir, f"{stem}.pkl")
        save_detectron2_checkpoint(converted, out, author=f"torchvision/timm via detpre: {entry.spec}")
        logger.info(
            "%s: converted the torchvision/timm ResNet-%d in %s (%d tensors; %d left out: classifier, "
            "BN counters) to %s",
            where,
            values["MODEL.RESNETS.DEPTH"],
            spec,
            len(converted),
            len(dropped),
            out,
        )
        return Weights(path=out, opts=tuple(as_overrides(values)))
    raise ValueError(
        f"{where}: {local} holds neither a Detectron2 checkpoint (names such as "
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


@dataclass
class StagePlan:
    """One pre-training stage, resolved: its folder, ``tools/train_net.py`` arguments, config
    and the key its starting weights went to."""

    stage: Stage
    output_dir: str
    argv: List[str]
    cfg: CfgNode
    weights_key: str

    @property
    def name(self) -> str:
        return f"pretrain_{self.stage.name}"

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.output_dir, FINAL_CHECKPOINT)

    @property
    def images_per_iter(self) -> int:
        return int(self.cfg.SOLVER.IMS_PER_BATCH)


@dataclass
class ConversionPlan:
    """A stage's final checkpoint turned into one consumer's starting weights
    (``tools/convert_pretrained.py``, checked against the consumer's config)."""

    stage: str
    consumer: str  # "stage NAME" or "init NAME"
    output: str  # the weights file
    argv: List[str]  # tools/convert_pretrained.py's arguments

    @property
    def name(self) -> str:
        return f"convert_{self.stage}_to_{self.consumer.replace(' ', '_')}"


@dataclass
class StudyPlan:
    """Every job of a study, in an order that runs each after what it needs."""

    stages: List[StagePlan]
    conversions: List[ConversionPlan]
    cells: List[RunPlan]

    def __iter__(self):
        return iter(self.cells)


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
    """The outcome of one run, as written in ``init_study.json``.

    ``metric`` is the study's first metric (the figure's), ``value`` its final value and
    ``values`` the final value of every metric of the study.
    """

    init: str
    schedule: str
    output_dir: str
    status: str  # "done", "failed", "stopped", "not run", "waiting" or "submitted"
    metric: str
    value: Optional[float] = None
    values: Dict[str, Optional[float]] = field(default_factory=dict)
    iteration: Optional[int] = None
    max_iter: int = 0
    images_per_iter: int = 0
    images_seen: int = 0
    curve: List[Tuple[int, float]] = field(default_factory=list)  # (images seen, value)
    error: str = ""


@dataclass
class StageOutcome:
    """A pre-training stage as the table reports it: its compute and whether it finished."""

    stage: str
    weights: str  # what it started from
    output_dir: str
    status: str
    max_iter: int
    images_per_iter: int
    error: str = ""


def _format(value: Optional[float], digits: int) -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def _columns(schedules: Sequence[str], metrics: Sequence[str]) -> List[Tuple[str, str]]:
    """(schedule, metric) of every value column: schedules in order, each with every metric."""
    return [(s, m) for s in schedules for m in metrics]


def _value(cell: Optional[Cell], metric: str) -> Optional[float]:
    if cell is None:
        return None
    return cell.values.get(metric, cell.value if metric == cell.metric else None)


def markdown_table(
    cells: Sequence[Cell],
    inits: Sequence[str],
    schedules: Sequence[str],
    metrics: Union[str, Sequence[str]],
    digits: int = 2,
) -> str:
    """Rows: initializations; columns: schedules (each with every metric when there are
    several); each cell the run's final value."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    by_run = {(c.init, c.schedule): c for c in cells}
    columns = _columns(schedules, metrics)
    header = [metrics[0], *schedules] if len(metrics) == 1 else ["init", *(f"{s} {m}" for s, m in columns)]
    lines = ["| " + " | ".join(header) + " |", "|:--" + "|--:" * len(columns) + "|"]
    for init in inits:
        values = [_format(_value(by_run.get((init, s)), m), digits) for s, m in columns]
        lines.append("| " + " | ".join([init, *values]) + " |")
    return "\n".join(lines) + "\n"


def stages_table(stages: Sequence[StageOutcome]) -> str:
    """The pre-training stages: what each started from, its length and whether it finished
    (the compute a row's fine-tuning table does not show)."""
    if not stages:
        return ""
    lines = ["| stage | from | iterations x images | status |", "|:--|:--|--:|:--|"]
    for s in stages:
        lines.append(f"| {s.stage} | {s.weights or '(its config)'} | {s.max_iter} x {s.images_per_iter} | {s.status} |")
    return "\n".join(lines) + "\n"


def _json_number(value: Optional[float]) -> Optional[float]:
    return None if value is None or math.isnan(value) else value


def write_results(
    cells: Sequence[Cell],
    inits: Sequence[str],
    schedules: Sequence[str],
    metrics: Union[str, Sequence[str]],
    output_dir: str,
    stages: Sequence[StageOutcome] = (),
) -> Dict[str, str]:
    """Write the table as ``init_study.md`` / ``.csv`` (rows inits, columns schedules x
    metrics) and every cell's and stage's details as ``init_study.json``; return the paths by
    extension."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    paths = {ext: os.path.join(output_dir, f"init_study.{ext}") for ext in ("md", "csv", "json")}
    with atomic_write(paths["md"]) as f:
        f.write(markdown_table(cells, inits, schedules, metrics))
        if stages:
            f.write("\nPre-training stages:\n\n" + stages_table(stages))
    by_run = {(c.init, c.schedule): c for c in cells}
    columns = _columns(schedules, metrics)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["init", *(s if len(metrics) == 1 else f"{s} {m}" for s, m in columns)])
    for init in inits:
        values = [_value(by_run.get((init, s)), m) for s, m in columns]
        writer.writerow([init, *("" if v is None else repr(v) for v in values)])
    with atomic_write(paths["csv"]) as f:
        f.write(buf.getvalue())
    records = []
    for c in cells:
        record = asdict(c)
        record["value"] = _json_number(c.value)
        record["values"] = {k: _json_number(v) for k, v in c.values.items()}
        record["curve"] = [[x, _json_number(y)] for x, y in c.curve]
        records.append(record)
    with atomic_write(paths["json"]) as f:
        json.dump(
            {
                "metric": metrics[0],
                "metrics": metrics,
                "inits": list(inits),
                "schedules": list(schedules),
                "runs": records,
                "stages": [asdict(s) for s in stages],
            },
            f,
            indent=1,
        )
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


def _check_folder(out: str, cfg: CfgNode) -> None:
    """Refuse a run folder that holds a run of another config."""
    saved = os.path.join(out, "config.yaml")
    if os.path.isfile(saved):
        diff = config_differences(saved, cfg)
        if diff:
            raise ValueError(
                f"{out} holds a run of another config ({'; '.join(diff[:5])}"
                f"{'; ...' if len(diff) > 5 else ''}): remove that folder or use another output folder"
            )


def _check_pairs(where: str, opts: Sequence[str], taken_keys: Sequence[str]) -> None:
    if len(opts) % 2:
        raise ValueError(f"{where} must be KEY VALUE pairs; got an odd number of items: {list(opts)}")
    taken = [k for k in opts[::2] if k in taken_keys]
    if taken:
        raise ValueError(f"{where} set {taken}, which the study sets itself (use --init and --schedules)")


class InitStudy:
    """Initializations x schedules on one dataset config, run by ``tools/train_net.py``.

    Args:
        config_file: the dataset/model config of every run (an initialization may replace it).
        inits: the rows; names must be unique.
        schedules: the columns, ``kx`` names resolved by ``SOLVER.SCHEDULE`` (``"1x"``, ``"0.5x"``).
        output_dir: the study folder: one sub-folder per run, ``pretrain/``, ``weights/``, the
            table and plot.
        opts: ``KEY VALUE`` overrides of every run (before each initialization's own).
        metric: the ``metrics.json`` key(s) of the table; the first one's curves are drawn
            (``bbox/AP``; KAIST's ``kaist/MR_all kaist/MR_day kaist/MR_night``).
        launcher_args: passed to every ``train_net.py`` (``--num-gpus 8``, ``--dist-url ...``).
        stages: the pre-training stages that rows (``stage:NAME``) and stages start from.
    """

    def __init__(
        self,
        config_file: str,
        inits: Sequence[Init],
        schedules: Sequence[str],
        output_dir: str,
        opts: Sequence[str] = (),
        metric: Union[str, Sequence[str]] = "bbox/AP",
        launcher_args: Sequence[str] = (),
        stages: Sequence[Stage] = (),
    ):
        if not inits:
            raise ValueError("an init study needs at least one --init NAME=SPEC")
        if not schedules:
            raise ValueError("an init study needs at least one schedule (--schedules 1x 2x ...)")
        for kind, names in (("initialization", [i.name for i in inits]), ("stage", [s.name for s in stages])):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind} names must be unique; repeated: {duplicates}")
        for schedule in [*schedules, *(s.schedule for s in stages if s.schedule)]:
            parse_schedule(schedule)
        if len(set(schedules)) != len(schedules):
            raise ValueError(f"schedules must be unique; got {list(schedules)}")
        _check_pairs("the study's overrides", opts, _STUDY_KEYS)
        for init in inits:
            _check_pairs(f"--init-opts {init.name}", init.opts, _STUDY_KEYS)
        for stage in stages:
            _check_pairs(f"stage {stage.name}'s opts", stage.opts, (*_STUDY_KEYS, BOX_DOMAIN_WEIGHTS_KEY))
        known = {s.name for s in stages}
        for where, needed in [(f"--init {i.name}={i.spec}", i.stage) for i in inits] + [
            (f"stage {s.name}: weights {s.spec}", s.stage) for s in stages
        ]:
            if needed and needed not in known:
                raise ValueError(f"{where}: the study has no stage {needed!r} (stages: {sorted(known) or 'none'})")
        metrics = [metric] if isinstance(metric, str) else list(metric)
        if not metrics:
            raise ValueError("an init study needs at least one metric (--metric bbox/AP)")
        for path in [config_file] + [i.config_file for i in inits if i.config_file] + [s.config_file for s in stages]:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file {path} does not exist")
        self.config_file = os.path.abspath(config_file)
        self.inits = list(inits)
        self.schedules = list(schedules)
        self.output_dir = os.path.abspath(output_dir)
        self.opts = list(opts)
        self.metrics = metrics
        self.launcher_args = list(launcher_args)
        self.stages = _in_dependency_order(stages)

    @property
    def metric(self) -> str:
        """The metric of the figure: the first one."""
        return self.metrics[0]

    def _converted(self, consumer: str) -> str:
        return os.path.join(self.output_dir, "weights", f"{consumer.replace(' ', '_')}.pth")

    def plan(self, convert_script: str = "") -> StudyPlan:
        """Resolve every stage and cell (converting torchvision weights where needed) and check
        existing folders; ``convert_script`` is ``tools/convert_pretrained.py``, which the
        conversion jobs run.

        Raises on a config error or on a folder made with another config, before any run starts.
        """
        weights_dir = os.path.join(self.output_dir, "weights")
        stage_plans: Dict[str, StagePlan] = {}
        conversions: List[ConversionPlan] = []

        def convert(stage: str, consumer: str, config_file: str, opts: Sequence[str]) -> str:
            output = self._converted(consumer)
            argv = [stage_plans[stage].checkpoint, output, "--config-file", config_file]
            argv += ["--report", os.path.splitext(output)[0] + ".json", *opts]
            conversions.append(ConversionPlan(stage, consumer, output, argv))
            return output

        for stage in self.stages:
            out = os.path.join(self.output_dir, "pretrain", stage.name)
            where = f"stage {stage.name}"
            try:
                key = input_weights_key(load_cfg(stage.config_file, list(stage.opts)))
                if stage.stage:
                    weights = Weights(convert(stage.stage, f"stage {stage.name}", stage.config_file, stage.opts))
                else:
                    weights = prepare_weights(stage, weights_dir) if stage.spec else Weights(path="")
                opts = [*weights.opts, *stage.opts, "OUTPUT_DIR", out]
                if stage.spec:
                    opts += [key, weights.path]
                cfg = load_cfg(stage.config_file, opts, schedule=stage.schedule or None)
            except (KeyError, ValueError) as e:
                raise ValueError(f"{where}: {e}") from e
            _check_folder(out, cfg)
            argv = ["--config-file", stage.config_file, *(["--schedule", stage.schedule] if stage.schedule else [])]
            argv += ["--resume", *self.launcher_args, *opts]
            stage_plans[stage.name] = StagePlan(stage, out, argv, cfg, key)

        cells = []
        for init in self.inits:
            config_file = os.path.abspath(init.config_file or self.config_file)
            if init.stage:
                own = [*self.opts, *init.opts]
                weights = Weights(convert(init.stage, f"init {init.name}", config_file, own))
            else:
                weights = prepare_weights(init, weights_dir)
            for schedule in self.schedules:
                out = os.path.join(self.output_dir, f"{init.name}_{schedule}")
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
                _check_folder(out, cfg)
                cells.append(RunPlan(init, schedule, out, argv, cfg))
        if conversions and not convert_script:
            raise ValueError("the study's stages need tools/convert_pretrained.py (convert_script)")
        for c in conversions:
            c.argv = [convert_script, *c.argv]
        return StudyPlan(list(stage_plans.values()), conversions, cells)

    def jobs(self, plan: StudyPlan, train_script: str) -> List[StudyJob]:
        """The study's processes in an order that runs each after what it needs: every stage
        and its conversions before the rows that need them, rows in the order given."""
        python = sys.executable
        jobs: List[StudyJob] = []
        needs_of: Dict[str, Tuple[str, ...]] = {}  # a conversion's output -> the jobs before it
        for stage in plan.stages:
            needs = tuple(c.name for c in plan.conversions if c.consumer == f"stage {stage.stage.name}")
            started = "resuming" if os.path.isfile(os.path.join(stage.output_dir, "last_checkpoint")) else "training"
            jobs.append(
                StudyJob(
                    stage.name,
                    [python, train_script, *stage.argv],
                    os.path.join(stage.output_dir, "train_stdout.log"),
                    is_done=lambda p=stage.checkpoint: os.path.isfile(p),
                    needs=needs,
                    describe=f"{started} pre-training ({stage.cfg.SOLVER.MAX_ITER} iterations of "
                    f"{stage.images_per_iter} images, {stage.weights_key}: "
                    f"{_get(stage.cfg, stage.weights_key) or 'none'})",
                )
            )
            for c in plan.conversions:
                if c.stage == stage.stage.name:
                    jobs.append(
                        StudyJob(
                            c.name,
                            [python, *c.argv],
                            os.path.splitext(c.output)[0] + ".log",
                            is_done=lambda p=c.output: os.path.isfile(p),
                            needs=(stage.name,),
                            describe=f"converting {stage.checkpoint} for {c.consumer}",
                        )
                    )
                    needs_of[c.output] = (c.name,)
        for cell in plan.cells:
            started = "resuming" if os.path.isfile(os.path.join(cell.output_dir, "last_checkpoint")) else "training"
            max_iter = int(cell.cfg.SOLVER.MAX_ITER)
            jobs.append(
                StudyJob(
                    cell.name,
                    [python, train_script, *cell.argv],
                    os.path.join(cell.output_dir, "train_stdout.log"),
                    is_done=lambda d=cell.output_dir, n=max_iter: is_finished(d, n),
                    needs=needs_of.get(cell.cfg.MODEL.WEIGHTS, ()),
                    describe=f"{started} ({max_iter} iterations of {cell.images_per_iter} images, weights: "
                    f"{cell.cfg.MODEL.WEIGHTS or 'none, from scratch'})",
                )
            )
        return jobs

    def run(
        self,
        train_script: str,
        plan: Optional[StudyPlan] = None,
        log: Callable[[str], None] = print,
        launcher: Any = None,
    ) -> Tuple[List[Cell], List[StageOutcome]]:
        """Run every unfinished job through ``launcher`` (default: one after another here),
        then collect the table.

        Each run's output goes to ``<run>/train_stdout.log``; a run that fails is reported and
        the others that do not need it still run.
        """
        plan = plan if plan is not None else self.plan()
        launcher = launcher or SequentialLauncher()
        outcome = launcher.run(self.jobs(plan, train_script), log=log)
        return self.collect(plan, outcome)

    def collect(
        self, plan: StudyPlan, outcome: Optional[Dict[str, JobOutcome]] = None
    ) -> Tuple[List[Cell], List[StageOutcome]]:
        """Read every cell's final metrics and curve back from its folder; ``outcome`` gives the
        status and reason of the jobs that did not finish in this session."""
        outcome = outcome or {}

        def status(name: str, needs: Sequence[str] = ()) -> Tuple[str, str]:
            if name in outcome:
                return outcome[name].status, outcome[name].why
            for need in needs:  # a conversion that did not finish: say which
                if need in outcome:
                    return "not run", f"{need}: {outcome[need].status} ({outcome[need].why})"
            return "not run", ""

        stages = []
        for stage in plan.stages:
            done = os.path.isfile(stage.checkpoint)
            state, why = ("done", "") if done else status(stage.name)
            stages.append(
                StageOutcome(
                    stage.stage.name,
                    stage.stage.spec,
                    stage.output_dir,
                    state,
                    int(stage.cfg.SOLVER.MAX_ITER),
                    stage.images_per_iter,
                    why,
                )
            )
        converting = {c.output: c.name for c in plan.conversions}
        cells = []
        for cell_plan in plan.cells:
            records = read_metrics(cell_plan.output_dir, missing_ok=True)
            max_iter = int(cell_plan.cfg.SOLVER.MAX_ITER)
            needs = [converting[cell_plan.cfg.MODEL.WEIGHTS]] if cell_plan.cfg.MODEL.WEIGHTS in converting else []
            state, error = status(cell_plan.name, needs)
            cell = Cell(
                cell_plan.init.name,
                cell_plan.schedule,
                cell_plan.output_dir,
                status=state,
                metric=self.metric,
                max_iter=max_iter,
                images_per_iter=cell_plan.images_per_iter,
                images_seen=max_iter * cell_plan.images_per_iter,
                error=error,
            )
            if is_finished(cell_plan.output_dir, max_iter):
                found = {m: final_metric(records, m) for m in self.metrics}
                missing = [m for m, f in found.items() if f is None]
                if missing:
                    final = next(r for r in reversed(records) if r["iteration"] >= max_iter)
                    cell.status = "failed"
                    cell.error = (
                        f"{cell_plan.output_dir}/{METRICS_FILE} has no {', '.join(map(repr, missing))}; its final "
                        f"evaluation has {sorted(k for k in final if k != 'iteration')} (choose one with --metric)"
                    )
                else:
                    cell.status, cell.error = "done", ""
                    cell.iteration, cell.value = found[self.metric]
                    cell.values = {m: f[1] for m, f in found.items()}
            # Iterations trained (the final evaluation at MAX_ITER; a resumed run's repeated
            # evaluation with its latest value), as images seen.
            per_image = cell_plan.images_per_iter
            curve = {min(it, max_iter) * per_image: v for it, v in series_from_records(records, self.metric)}
            cell.curve = sorted(curve.items())
            cells.append(cell)
        return cells, stages


def _get(cfg: CfgNode, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _in_dependency_order(stages: Sequence[Stage]) -> List[Stage]:
    """The stages with each after the stage it starts from (in the order given otherwise);
    a cycle is refused."""
    by_name = {s.name: s for s in stages}
    ordered: List[Stage] = []
    visiting: List[str] = []

    def visit(stage: Stage) -> None:
        if stage in ordered:
            return
        if stage.name in visiting:
            raise ValueError(f"stages start from each other in a cycle: {' -> '.join([*visiting, stage.name])}")
        visiting.append(stage.name)
        if stage.stage in by_name:
            visit(by_name[stage.stage])
        visiting.pop()
        ordered.append(stage)

    for stage in stages:
        visit(stage)
    return ordered


def plan_summary(plan: StudyPlan, train_script: str) -> str:
    """One line per job (status, length) and the command that runs it: ``--dry-run``'s output."""

    def state(output_dir: str, finished: bool) -> str:
        if finished:
            return "finished"
        return "resume" if os.path.isfile(os.path.join(output_dir, "last_checkpoint")) else "new"

    lines = []
    for stage in plan.stages:
        lines.append(
            f"{stage.name}: {state(stage.output_dir, os.path.isfile(stage.checkpoint))}, MAX_ITER "
            f"{stage.cfg.SOLVER.MAX_ITER} x {stage.images_per_iter} images, BASE_LR {stage.cfg.SOLVER.BASE_LR:g}"
        )
        lines.append("  " + subprocess.list2cmdline([sys.executable, train_script, *stage.argv]))
    for c in plan.conversions:
        lines.append(f"{c.name}: {'finished' if os.path.isfile(c.output) else 'new'}")
        lines.append("  " + subprocess.list2cmdline([sys.executable, *c.argv]))
    for cell in plan.cells:
        lines.append(
            f"{cell.name}: {state(cell.output_dir, is_finished(cell.output_dir, cell.cfg.SOLVER.MAX_ITER))}, "
            f"MAX_ITER {cell.cfg.SOLVER.MAX_ITER} x {cell.images_per_iter} images, "
            f"STEPS {tuple(cell.cfg.SOLVER.STEPS)}, BASE_LR {cell.cfg.SOLVER.BASE_LR:g}"
        )
        lines.append("  " + subprocess.list2cmdline([sys.executable, train_script, *cell.argv]))
    return "\n".join(lines) + "\n"
