"""What an initialization study is made of, as the user writes it: rows, stages and the study file.

An initialization (a row of the study, ``--init NAME=SPEC``) names where its weights come
from; a SPEC is :data:`SCRATCH` (no weights: the config's own from-scratch settings),
``stage:NAME`` (the converted output of one of the study's pre-training stages) or a
checkpoint path / URL. A pre-training stage (:class:`Stage`) is one ``tools/train_net.py`` run
of a pre-training config (image-domain SSL, box-domain pre-training), itself started from a
SPEC, so that stages chain: image-domain -> box-domain -> the fine-tuning rows.

The study file (``tools/init_study.py --study``) writes a whole study down once.

A real study (every initialization route x several schedules, with pre-training stages that
feed some of the routes) is too much for a command line and must be rerun identically for
weeks, so it lives in a YAML file beside the configs it names::

    config_file: faster_rcnn_R_50_FPN_early_fusion_gn_scratch.yaml  # every cell's config
    schedules: [1x, 2x]
    metrics: [kaist/MR_all, kaist/MR_day, kaist/MR_night]  # the first one is drawn
    opts: {DATALOADER.NUM_WORKERS: 8}         # or [KEY, VALUE, ...]: every cell's overrides
    stages:                                    # pre-training runs, each trained once
      ssl:
        config_file: image_domain_mocov2_R_50_FPN_early_fusion_gn.yaml
        weights: scratch                       # SPEC; absent: the stage config's own weights
        schedule: 1x                           # optional: --schedule of the stage
        opts: {}
      ssl_boxdomain:
        config_file: aligndet_pretrain_faster_rcnn_R_50_FPN_early_fusion_gn_mocov2.yaml
        weights: stage:ssl                     # another stage's converted output
    inits:                                     # the rows, in this order
      scratch: {weights: scratch}
      ssl_boxdomain:
        weights: stage:ssl_boxdomain
        config_file: faster_rcnn_R_50_FPN_early_fusion_gn_mocov2_aligndet.yaml
        opts: {}
    submitit: {timeout_min: 4320, slurm_partition: learnfair}  # submitit's parameters

Relative paths (configs, checkpoints) are relative to the study
file's folder, as ``_BASE_`` is to a config's. Unknown keys are errors that name the file and
the key, never ignored: a misspelt ``schedule`` that silently fell back to the default would
train the wrong study for days.
"""

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from ..config import ConfigError
from ..config.loader import as_overrides

__all__ = [
    "SCRATCH",
    "STAGE_PREFIX",
    "Init",
    "Stage",
    "StudySpec",
    "check_name",
    "command_line_study",
    "is_study_file",
    "parse_assignments",
    "read_study_file",
    "resolve_spec",
]

#: The SPEC of no weights: the config's own from-scratch initialization.
SCRATCH = "scratch"
#: A SPEC that names a pre-training stage of the study: ``stage:NAME``.
STAGE_PREFIX = "stage:"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_TOP_KEYS = ("config_file", "schedules", "metrics", "opts", "stages", "inits", "submitit")
_STAGE_KEYS = ("config_file", "weights", "schedule", "opts")
_INIT_KEYS = ("weights", "config_file", "opts")


def check_name(name: str, where: str) -> None:
    """Names become folder names: refuse anything else than letters, digits and ``_ . + -``."""
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{where}: name {name!r} must start with a letter or digit and contain only "
            "letters, digits and _ . + - (it names the run folders)"
        )


def stage_of(spec: str) -> str:
    """The stage a SPEC names (``stage:NAME`` -> ``NAME``); "" for any other SPEC."""
    return spec[len(STAGE_PREFIX) :] if spec.startswith(STAGE_PREFIX) else ""


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
        """``NAME=SPEC`` -> Init (SPEC is ``scratch``, ``stage:NAME`` or a checkpoint path / URL)."""
        name, sep, spec = entry.partition("=")
        name, spec = name.strip(), spec.strip()
        if not sep or not name or not spec:
            raise ValueError(f"--init {entry!r}: expected NAME=SPEC, e.g. scratch=scratch or imagenet=R-50.pkl")
        check_name(name, f"--init {entry!r}")
        return cls(name=name, spec=spec)

    @property
    def is_scratch(self) -> bool:
        return self.spec == SCRATCH

    @property
    def stage(self) -> str:
        """The pre-training stage this row fine-tunes from; "" if none."""
        return stage_of(self.spec)


@dataclass(frozen=True)
class Stage:
    """One pre-training run of the study: its config, where its weights come from, its overrides.

    ``spec`` "" keeps the stage config's own weights; ``schedule`` "" its own schedule.
    """

    name: str
    config_file: str
    spec: str = ""
    schedule: str = ""
    opts: Tuple[str, ...] = ()

    @property
    def stage(self) -> str:
        """The stage this one starts from; "" if none."""
        return stage_of(self.spec)


@dataclass
class StudySpec:
    """A study file's contents, paths made absolute; empty fields were not given."""

    path: str
    config_file: str = ""
    schedules: List[str] = field(default_factory=list)
    metrics: List[str] = field(default_factory=list)
    opts: List[str] = field(default_factory=list)
    stages: List[Stage] = field(default_factory=list)
    inits: List[Init] = field(default_factory=list)
    submitit: Dict[str, Any] = field(default_factory=dict)


def resolve_spec(spec: str, folder: str) -> str:
    """A SPEC with a relative checkpoint path made relative to ``folder``; ``scratch``,
    ``stage:NAME``, URLs and model-zoo names unchanged."""
    spec = str(spec).strip()
    if spec == SCRATCH or spec.startswith(STAGE_PREFIX) or "://" in spec:
        return spec
    return os.path.normpath(os.path.join(folder, os.path.expanduser(spec)))


def _check_keys(where: str, node: Any, allowed: Tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}: expected a mapping with keys {list(allowed)}, got {node!r}")
    unknown = sorted(set(node) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)}")
    return node


def _opts(where: str, node: Any) -> List[str]:
    """``[KEY, VALUE, ...]`` or ``{KEY: VALUE}`` -> Detectron2 ``KEY VALUE`` overrides."""
    if node is None:
        return []
    if isinstance(node, Mapping):
        return as_overrides({str(k): v for k, v in node.items()})
    if isinstance(node, (list, tuple)):
        if len(node) % 2:
            raise ConfigError(f"{where}: KEY VALUE pairs expected, got an odd number of items: {list(node)}")
        return [str(v) for v in node]
    raise ConfigError(f"{where}: expected a mapping KEY: VALUE or a list [KEY, VALUE, ...], got {node!r}")


def _strings(where: str, node: Any) -> List[str]:
    if isinstance(node, str):
        return [node]
    if not isinstance(node, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in node):
        raise ConfigError(f"{where}: expected a list of names, got {node!r}")
    return [str(v) for v in node]


def _path(where: str, node: Any, folder: str) -> str:
    if not isinstance(node, str) or not node.strip():
        raise ConfigError(f"{where}: expected a file path, got {node!r}")
    path = os.path.normpath(os.path.join(folder, os.path.expanduser(node)))
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: {path} does not exist")
    return path


def _named(path: str, key: str, node: Any) -> List[Tuple[str, Any]]:
    """The entries of a ``NAME: {...}`` section, names checked."""
    if node is None:
        return []
    if not isinstance(node, Mapping):
        raise ConfigError(f"{path}: {key}: expected a mapping NAME: {{...}}, got {node!r}")
    for name in node:
        check_name(str(name), f"{path}: {key}.{name}")
    return [(str(name), value) for name, value in node.items()]


def _load_yaml(path: str) -> Any:
    """A study file's YAML, or a :class:`ConfigError` naming the file."""
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"study file {path}: cannot be read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"study file {path}: not valid YAML ({e})") from None


def is_study_file(path: str) -> bool:
    """Whether a YAML file beside the configs is a study file rather than a training config.

    Study files live in ``configs/`` next to the configs they name, so that their relative
    paths read as ``_BASE_`` does; their ``inits`` key (which no Detectron2 config has) tells
    them apart, for anything that walks the configs (the config tests).
    """
    data = _load_yaml(path)
    return isinstance(data, dict) and "inits" in data


def read_study_file(path: str) -> StudySpec:
    """Read and check a study file; raises :class:`ConfigError` naming the file and the key."""
    data = _load_yaml(path)
    data = _check_keys(f"study file {path}", data or {}, _TOP_KEYS)
    folder = os.path.dirname(os.path.abspath(path))
    spec = StudySpec(path=os.path.abspath(path))
    if "config_file" in data:
        spec.config_file = _path(f"{path}: config_file", data["config_file"], folder)
    spec.schedules = _strings(f"{path}: schedules", data.get("schedules", []))
    spec.metrics = _strings(f"{path}: metrics", data.get("metrics", []))
    spec.opts = _opts(f"{path}: opts", data.get("opts"))
    for name, node in _named(path, "stages", data.get("stages")):
        where = f"{path}: stages.{name}"
        node = _check_keys(where, node, _STAGE_KEYS)
        if "config_file" not in node:
            raise ConfigError(f"{where}: config_file is required (the pre-training config)")
        weights = node.get("weights")
        spec.stages.append(
            Stage(
                name=name,
                config_file=_path(f"{where}.config_file", node["config_file"], folder),
                spec=resolve_spec(weights, folder) if weights not in (None, "") else "",
                schedule=str(node.get("schedule") or ""),
                opts=tuple(_opts(f"{where}.opts", node.get("opts"))),
            )
        )
    for name, node in _named(path, "inits", data.get("inits")):
        where = f"{path}: inits.{name}"
        node = _check_keys(where, node, _INIT_KEYS)
        if node.get("weights") in (None, ""):
            raise ConfigError(f"{where}: weights is required (scratch, stage:NAME or a checkpoint)")
        config = _path(f"{where}.config_file", node["config_file"], folder) if node.get("config_file") else ""
        weights = resolve_spec(node["weights"], folder)
        spec.inits.append(Init(name, weights, config, tuple(_opts(f"{where}.opts", node.get("opts")))))
    submitit = data.get("submitit") or {}
    if not isinstance(submitit, Mapping):
        raise ConfigError(f"{path}: submitit: expected a mapping of submitit parameters, got {submitit!r}")
    spec.submitit = dict(submitit)
    return spec


def parse_assignments(entries: Sequence[str], flag: str) -> Dict[str, str]:
    """``["NAME=VALUE", ...]`` -> ``{NAME: VALUE}`` (``--init-config``, ``--submitit``)."""
    out: Dict[str, str] = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"{flag} {entry!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def command_line_study(
    spec: Optional[StudySpec],
    config_file: str = "",
    inits: Sequence[str] = (),
    init_configs: Sequence[str] = (),
    init_opts: Sequence[Sequence[str]] = (),
    schedules: Sequence[str] = (),
    metrics: Sequence[str] = (),
    opts: Sequence[str] = (),
    submitit: Sequence[str] = (),
    stage_opts: Sequence[Sequence[str]] = (),
    only: Sequence[str] = (),
) -> StudySpec:
    """The study a command line describes: the study file's (if any), with what the command
    line gives on top of it.

    ``config_file``, ``schedules`` and ``metrics`` replace the file's; ``inits``
    (``NAME=SPEC``) add rows after the file's; ``opts`` come after the file's; ``init_configs``
    (``NAME=FILE``) and ``init_opts`` (``[NAME, KEY, VALUE, ...]``) apply to any row of either;
    ``submitit`` (``KEY=VALUE``, the value read as YAML) replaces the file's parameters one by one;
    ``stage_opts`` (``[NAME, KEY, VALUE, ...]``) come after a stage's own; ``only`` keeps these
    rows and the stages they start from, directly or through other stages.
    """
    out = StudySpec(path=spec.path if spec else "")
    if spec is not None:
        out.config_file, out.schedules, out.metrics = spec.config_file, list(spec.schedules), list(spec.metrics)
        out.opts, out.stages, out.inits = list(spec.opts), list(spec.stages), list(spec.inits)
        out.submitit = dict(spec.submitit)
    out.config_file = config_file or out.config_file
    out.schedules = list(schedules) or out.schedules
    out.metrics = list(metrics) or out.metrics or ["bbox/AP"]
    out.opts = [*out.opts, *opts]
    out.inits = [*out.inits, *(Init.parse(entry) for entry in inits)]
    if not out.config_file:
        raise ValueError("no config: give --config-file or config_file in the study file (--study)")
    if not out.schedules:
        raise ValueError("no schedules: give --schedules (e.g. 1x 2x) or schedules in the study file")
    if not out.inits:
        raise ValueError("no initializations: give --init NAME=SPEC or inits in the study file")
    configs = parse_assignments(init_configs, "--init-config")
    extra: Dict[str, List[str]] = {}
    for name, *pairs in init_opts:
        extra.setdefault(name, []).extend(pairs)
    known = {i.name for i in out.inits}
    for flag, names in (("--init-config", configs), ("--init-opts", extra)):
        for name in names:
            check_name(name, flag)
            if name not in known:
                raise ValueError(f"{flag} {name}: no initialization is named {name!r} (known: {sorted(known)})")
    out.inits = [
        Init(i.name, i.spec, configs.get(i.name, i.config_file), (*i.opts, *extra.get(i.name, ()))) for i in out.inits
    ]
    for key, value in parse_assignments(submitit, "--submitit").items():
        out.submitit[key] = yaml.safe_load(value)
    staged: Dict[str, List[str]] = {}
    for name, *pairs in stage_opts:
        staged.setdefault(name, []).extend(pairs)
    stage_names = {s.name for s in out.stages}
    for name in staged:
        if name not in stage_names:
            raise ValueError(f"--stage-opts {name}: the study has no stage {name!r} (stages: {sorted(stage_names)})")
    out.stages = [
        Stage(s.name, s.config_file, s.spec, s.schedule, (*s.opts, *staged.get(s.name, ()))) for s in out.stages
    ]
    if only:
        unknown = sorted(set(only) - known)
        if unknown:
            raise ValueError(f"--only {unknown}: no such initialization (known: {sorted(known)})")
        out.inits = [i for i in out.inits if i.name in only]
        by_name = {s.name: s for s in out.stages}
        needed, todo = set(), [i.stage for i in out.inits if i.stage]
        while todo:
            name = todo.pop()
            if name in by_name and name not in needed:
                needed.add(name)
                todo.append(by_name[name].stage)
        out.stages = [s for s in out.stages if s.name in needed]
    return out
