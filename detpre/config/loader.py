"""The one way detpre reads a config, for every tool: ``load_cfg(config_file, opts, schedule)``.

Precedence, lowest first:

1. Detectron2's and detpre's defaults (:func:`detpre.config.add_detpre_config`);
2. the config file and its ``_BASE_`` files (a file overrides the files it inherits from);
3. the named schedule (``SOLVER.SCHEDULE.NAME``, or ``--schedule``), which writes
   ``SOLVER.MAX_ITER``, ``STEPS``, ``BASE_LR``, ``WARMUP_ITERS``, ``CHECKPOINT_PERIOD`` and
   ``TEST.EVAL_PERIOD`` (:data:`detpre.solver.schedule.SCHEDULE_KEYS`);
4. the command line's ``KEY VALUE`` pairs (every tool's ``opts``/``--opts``): what the user
   typed last is what runs, a schedule included.

A config file that names a schedule may restate the values the schedule gives (detpre's
configs do, for stock Detectron2 tools, and so does the ``config.yaml`` a run saves), but a
file that sets one of them to another value contradicts its own schedule: that is a
:class:`ConfigError` naming the file and the key, never a silent replacement. Which values
came from the schedule and which the command line kept is recorded in a
:class:`ScheduleReport`, logged by the launcher and printed by ``--dry-run``.

The loader also checks, before anything is built: that dataset names are registered
(subset names such as ``coco_2017_train_10k_s0`` are registered on the way), that
``PIXEL_MEAN``, ``PIXEL_STD`` and ``INPUT.FORMAT`` agree on the channels, and that no
``SOLVER.STEPS`` lies beyond ``MAX_ITER`` unnoticed.
"""

import difflib
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog

from ..data.datasets.subsets import ensure_subset_registered
from ..solver.schedule import SCHEDULE_KEYS, apply_schedule, resolve_schedule
from .defaults import add_detpre_config
from .errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "ConfigFile",
    "ResolvedConfig",
    "ScheduleReport",
    "as_overrides",
    "config_file_chain",
    "flatten_keys",
    "load_cfg",
    "nest_keys",
    "resolve_cfg",
]

_BASE_KEY = "_BASE_"
_SCHEDULE_NAME = "SOLVER.SCHEDULE.NAME"
# Channels of Detectron2's own image formats; multispectral formats (KAIST) are checked by
# their mapper, which knows its modalities.
_FORMAT_CHANNELS = {"BGR": 3, "RGB": 3, "YUV-BT.601": 3, "L": 1}


@dataclass(frozen=True)
class ConfigFile:
    """One file of a config's ``_BASE_`` chain and the keys it sets itself."""

    path: str
    keys: Dict[str, Any]


def flatten_keys(node: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"SOLVER": {"MAX_ITER": 5}}`` -> ``{"SOLVER.MAX_ITER": 5}`` (a config's YAML, loaded)."""
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten_keys(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def nest_keys(values: Dict[str, Any]) -> Dict[str, Any]:
    """``{"MODEL.RESNETS.DEPTH": 50}`` -> ``{"MODEL": {"RESNETS": {"DEPTH": 50}}}``, a config's YAML."""
    out: Dict[str, Any] = {}
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def as_overrides(values: Dict[str, Any]) -> List[str]:
    """``KEY VALUE`` command-line overrides that merge back to ``values`` (no blanks in a value)."""
    return [
        word
        for key, value in values.items()
        for word in (key, value if isinstance(value, str) else repr(value).replace(" ", ""))
    ]


def _base_path(base: str, child: str) -> str:
    """Where ``_BASE_: base`` of ``child`` points, as fvcore's loader resolves it."""
    base = os.path.expanduser(base) if base.startswith("~") else base
    if not base.startswith(("/", "https://", "http://")):
        base = os.path.join(os.path.dirname(child), base)
    return base


def config_file_chain(path: str, child: str = "") -> List[ConfigFile]:
    """The files ``path`` is merged from, in merge order (bases first, ``path`` last);
    ``child`` is the file whose ``_BASE_`` named ``path``."""
    if not os.path.isfile(path):
        where = f"{child}: its {_BASE_KEY} " if child else "Config file "
        raise ConfigError(f"{where}{path} does not exist.")
    try:
        with open(path, "r", encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"Invalid config file {path}: {type(e).__name__}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Invalid config file {path}: expected a mapping of keys, got {type(raw).__name__}.")
    bases = raw.pop(_BASE_KEY, [])
    chain: List[ConfigFile] = []
    for base in bases if isinstance(bases, list) else [bases]:
        if not isinstance(base, str):
            raise ConfigError(f"Invalid config file {path}: {_BASE_KEY} must name files, got {base!r}.")
        chain += config_file_chain(_base_path(base, path), child=path)
    return chain + [ConfigFile(path, flatten_keys(raw))]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


@dataclass
class ScheduleReport:
    """Where the solver keys of a run came from."""

    name: str
    ims_per_batch: int
    #: key -> value written by the schedule
    applied: Dict[str, Any] = field(default_factory=dict)
    #: key -> (value set on the command line, value the schedule gives)
    overridden: Dict[str, Tuple[Any, Any]] = field(default_factory=dict)

    def lines(self) -> List[str]:
        out = [
            f"schedule {self.name} at {self.ims_per_batch} images/batch: "
            + ", ".join(f"{k} {v}" for k, v in self.applied.items())
        ]
        out += [
            f"{key} {user} set on the command line (the schedule gives {given})"
            for key, (user, given) in self.overridden.items()
        ]
        return out


@dataclass
class ResolvedConfig:
    """A config and the account of how it was resolved."""

    cfg: CfgNode
    schedule: Optional[ScheduleReport] = None
    warnings: List[str] = field(default_factory=list)

    def log(self, log: logging.Logger = logger) -> None:
        for line in self.schedule.lines() if self.schedule else []:
            log.info("Config: %s", line)
        for line in self.warnings:
            log.warning("Config: %s", line)

    def commented_dump(self) -> str:
        """The YAML of the config, its provenance and warnings on top as comments."""
        notes = (self.schedule.lines() if self.schedule else []) + [f"WARNING: {w}" for w in self.warnings]
        return "".join(f"# {line}\n" for line in notes) + self.cfg.dump()


def _pairs(opts: Sequence[str]) -> List[Tuple[str, str]]:
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(
            f"Command-line overrides must be KEY VALUE pairs; {len(opts)} words given, the last is {opts[-1]!r}."
        )
    return list(zip(opts[0::2], opts[1::2]))


def _merge_file(cfg: CfgNode, path: str) -> None:
    # yacs reports an unknown key or a wrong type as a bare AssertionError/KeyError, and a
    # YAML syntax error or a missing _BASE_ file in its own terms; say which file.
    try:
        cfg.merge_from_file(path)
    except (AssertionError, KeyError, ValueError, TypeError, OSError, yaml.YAMLError) as e:
        raise ConfigError(f"Invalid config file {path}: {type(e).__name__}: {e}") from None


def _merge_opts(cfg: CfgNode, opts: Sequence[str]) -> None:
    try:
        cfg.merge_from_list(list(opts))
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"Invalid command-line override {list(opts)}: {type(e).__name__}: {e}") from None


def _get(cfg: CfgNode, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _check_file_schedule(cfg: CfgNode, chain: List[ConfigFile]) -> None:
    """A file may restate its schedule's values but not contradict them (see module doc)."""
    name = cfg.SOLVER.SCHEDULE.NAME
    namers = [i for i, f in enumerate(chain) if _SCHEDULE_NAME in f.keys]
    if not name or not namers:
        return
    try:
        given = resolve_schedule(cfg, name).values()
    except ValueError as e:
        raise ConfigError(f"{chain[namers[-1]].path}: {e}") from None
    for config_file in chain[namers[-1] :]:
        for key, value in given.items():
            if key not in config_file.keys:
                continue
            # The file's own value, decoded as yacs decodes it ("(1, 2)" is a tuple).
            written = CfgNode._decode_cfg_value(config_file.keys[key])
            if not _same(written, value):
                raise ConfigError(
                    f"{config_file.path} sets {key} {written} but names schedule {name!r} "
                    f"({chain[namers[-1]].path}), which gives {value}: remove {key} from the file, or "
                    f"set SOLVER.SCHEDULE.NAME '' there to use the file's solver values as written."
                )


def _schedule_name(cfg: CfgNode, schedule: str, opts: Dict[str, str]) -> str:
    flag = str(schedule or "").strip()
    typed = cfg.SOLVER.SCHEDULE.NAME if _SCHEDULE_NAME in opts else None
    if flag and typed is not None and typed != flag:
        raise ConfigError(f"--schedule {flag!r} and {_SCHEDULE_NAME} {typed!r} disagree: give one of them.")
    return flag or cfg.SOLVER.SCHEDULE.NAME


def _apply_schedule(cfg: CfgNode, name: str, typed: Dict[str, str]) -> Optional[ScheduleReport]:
    keep = [key for key in SCHEDULE_KEYS.values() if key in typed]
    user = {key: _get(cfg, key) for key in keep}
    try:
        schedule = apply_schedule(cfg, name, keep=keep)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if schedule is None:
        return None
    report = ScheduleReport(name=cfg.SOLVER.SCHEDULE.NAME, ims_per_batch=cfg.SOLVER.IMS_PER_BATCH)
    for key, value in schedule.values().items():
        if key in user:
            report.overridden[key] = (user[key], value)
        else:
            report.applied[key] = value
    return report


def _step_warnings(cfg: CfgNode) -> List[str]:
    for key, values in (("MAX_ITER", [cfg.SOLVER.MAX_ITER]), ("STEPS", list(cfg.SOLVER.STEPS))):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"SOLVER.{key} must hold iteration counts (integers), got {cfg.SOLVER[key]!r}.")
    late = [s for s in cfg.SOLVER.STEPS if s >= cfg.SOLVER.MAX_ITER]
    if not late:
        return []
    return [
        f"SOLVER.STEPS {tuple(cfg.SOLVER.STEPS)}: the LR drop(s) at iteration(s) {', '.join(map(str, late))} never "
        f"happen, the run ends at SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER}."
    ]


def check_input_channels(cfg: CfgNode) -> None:
    """PIXEL_MEAN, PIXEL_STD and INPUT.FORMAT must agree on the number of input channels.

    Detectron2 would only fail at the first forward pass, deep in a broadcast, after the
    data was loaded; the backbone's stem is sized from ``len(PIXEL_MEAN)``.
    """
    mean, std = cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD
    if len(mean) != len(std):
        raise ConfigError(
            f"MODEL.PIXEL_MEAN has {len(mean)} values ({list(mean)}) but MODEL.PIXEL_STD has "
            f"{len(std)} ({list(std)}): give one per input channel."
        )
    expected = _FORMAT_CHANNELS.get(cfg.INPUT.FORMAT)
    if expected is None and not cfg.INPUT.DATASET_MAPPER_NAME:
        raise ConfigError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT!r} is not one of Detectron2's image formats "
            f"({', '.join(_FORMAT_CHANNELS)}); multispectral formats such as 'BGRT' need "
            "INPUT.DATASET_MAPPER_NAME 'MultispectralDatasetMapper'."
        )
    if expected is not None and len(mean) != expected:
        raise ConfigError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT!r} has {expected} channels but MODEL.PIXEL_MEAN has "
            f"{len(mean)} values ({list(mean)})."
        )


def check_datasets(cfg: CfgNode) -> None:
    """Every name in ``DATASETS.TRAIN`` / ``TEST`` is registered (subsets registered on the way)."""
    for key in ("TRAIN", "TEST"):
        names = cfg.DATASETS[key]
        if not all(isinstance(name, str) and name for name in names):
            raise ConfigError(f"DATASETS.{key} must list dataset names, got {names!r}.")
        for name in names:
            if not ensure_subset_registered(name):
                close = difflib.get_close_matches(name, DatasetCatalog.list(), n=5, cutoff=0.6)
                hint = f"close matches: {', '.join(close)}" if close else "see DatasetCatalog.list()"
                raise ConfigError(f"DATASETS.{key}: dataset {name!r} is not registered ({hint}).")


def resolve_cfg(config_file: str = "", opts: Sequence[str] = (), schedule: str = "") -> ResolvedConfig:
    """The mutable config of a run and how it was resolved (see the module docstring)."""
    pairs = _pairs(opts)
    typed = dict(pairs)
    cfg = get_cfg()
    add_detpre_config(cfg)
    if config_file:
        chain = config_file_chain(config_file)
        _merge_file(cfg, config_file)
        _check_file_schedule(cfg, chain)
    _merge_opts(cfg, [word for pair in pairs for word in pair])
    report = _apply_schedule(cfg, _schedule_name(cfg, schedule, typed), typed)
    check_input_channels(cfg)
    check_datasets(cfg)
    return ResolvedConfig(cfg, report, _step_warnings(cfg))


def load_cfg(config_file: str = "", opts: Sequence[str] = (), schedule: str = "", freeze: bool = True) -> CfgNode:
    """The config of a run: defaults < ``config_file`` < ``schedule`` < ``opts`` (module doc).

    Raises :class:`ConfigError` naming the file, key or value of anything that cannot run.
    Its provenance is logged here; the launcher logs it again once ``OUTPUT_DIR/log.txt`` is
    open (:func:`resolve_cfg` returns it).
    """
    resolved = resolve_cfg(config_file, opts, schedule)
    resolved.log()
    if freeze:
        resolved.cfg.freeze()
    return resolved.cfg
