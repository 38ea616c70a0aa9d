"""detpre.analysis.study_spec: the study file and the command line on top of it."""

import pytest

from detpre.analysis.study_spec import SCRATCH, Init, Stage, command_line_study, read_study_file, resolve_spec
from detpre.config import ConfigError

STUDY = """
config_file: configs/finetune.yaml
schedules: [1x, 2x]
metrics: [kaist/MR_all, kaist/MR_night]
opts: {SOLVER.IMS_PER_BATCH: 4, DATASETS.TEST: ["kaist_test"]}
stages:
  ssl:
    config_file: configs/ssl.yaml
    weights: scratch
    schedule: 0.5x
  box:
    config_file: configs/box.yaml
    weights: stage:ssl
    opts: [SOLVER.MAX_ITER, 7]
  own:
    config_file: configs/box.yaml
inits:
  scratch: {weights: scratch}
  imagenet: {weights: weights/R-50.pkl, config_file: configs/ft_frozen.yaml, opts: {MODEL.RESNETS.NORM: FrozenBN}}
  chain: {weights: stage:box}
  zoo: {weights: "catalog://ImageNetPretrained/FAIR/R-50-GN"}
submitit: {timeout_min: 60, slurm_partition: dev}
"""


@pytest.fixture
def study_file(tmp_path):
    (tmp_path / "configs").mkdir()
    for name in ("finetune", "ssl", "box", "ft_frozen"):
        (tmp_path / "configs" / f"{name}.yaml").write_text("{}\n")
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return path


def test_study_file_paths_are_relative_to_it(study_file):
    root = study_file.parent
    spec = read_study_file(str(study_file))
    assert spec.config_file == str(root / "configs" / "finetune.yaml")
    assert spec.schedules == ["1x", "2x"] and spec.metrics == ["kaist/MR_all", "kaist/MR_night"]
    # A mapping of overrides becomes KEY VALUE pairs Detectron2 reads back to the same values.
    assert spec.opts == ["SOLVER.IMS_PER_BATCH", "4", "DATASETS.TEST", "['kaist_test']"]
    assert spec.stages == [
        Stage("ssl", str(root / "configs" / "ssl.yaml"), SCRATCH, "0.5x"),
        Stage("box", str(root / "configs" / "box.yaml"), "stage:ssl", "", ("SOLVER.MAX_ITER", "7")),
        Stage("own", str(root / "configs" / "box.yaml")),  # no weights: the config's own
    ]
    assert spec.stages[1].stage == "ssl" and spec.stages[0].stage == ""
    assert spec.inits == [
        Init("scratch", SCRATCH),
        Init(
            "imagenet",
            str(root / "weights" / "R-50.pkl"),
            str(root / "configs" / "ft_frozen.yaml"),
            ("MODEL.RESNETS.NORM", "FrozenBN"),
        ),
        Init("chain", "stage:box"),
        Init("zoo", "catalog://ImageNetPretrained/FAIR/R-50-GN"),
    ]
    assert spec.inits[2].stage == "box"
    assert spec.submitit == {"timeout_min": 60, "slurm_partition": "dev"}


@pytest.mark.parametrize(
    "change, message",
    [
        (("schedules: [1x, 2x]", "schedule: [1x, 2x]"), "unknown key\\(s\\) \\['schedule'\\]"),
        (("    schedule: 0.5x", "    schedules: 0.5x"), "stages.ssl: unknown key\\(s\\) \\['schedules'\\]"),
        (("  scratch: {weights: scratch}", "  scratch: {config_file: configs/ssl.yaml}"), "inits.scratch: weights"),
        (("configs/box.yaml\n    weights", "configs/nope.yaml\n    weights"), "stages.box.config_file: .*nope.yaml"),
        (("opts: [SOLVER.MAX_ITER, 7]", "opts: [SOLVER.MAX_ITER]"), "stages.box.opts: KEY VALUE pairs"),
        (("  chain:", "  a/b:"), "inits.a/b: name 'a/b'"),
        (("submitit: {timeout_min: 60, slurm_partition: dev}", "submitit: [60]"), "submitit: expected a mapping"),
    ],
)
def test_study_file_errors_name_the_file_and_the_key(study_file, change, message):
    study_file.write_text(STUDY.replace(*change))
    with pytest.raises(ValueError, match=message) as error:
        read_study_file(str(study_file))
    assert str(study_file) in str(error.value)


def test_unreadable_study_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot be read"):
        read_study_file(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("inits: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_study_file(str(bad))


def test_command_line_adds_to_and_replaces_the_file(study_file):
    spec = read_study_file(str(study_file))
    merged = command_line_study(
        spec,
        inits=["extra=stage:ssl"],
        init_opts=[["imagenet", "SOLVER.BASE_LR", "0.01"], ["extra", "SEED", "1"]],
        schedules=["4x"],
        opts=["SEED", "3"],
        submitit=["timeout_min=4320", "slurm_constraint=volta32gb"],
    )
    assert merged.config_file == spec.config_file  # not given: the file's
    assert merged.schedules == ["4x"] and merged.metrics == spec.metrics
    assert merged.opts == [*spec.opts, "SEED", "3"]
    assert [i.name for i in merged.inits] == ["scratch", "imagenet", "chain", "zoo", "extra"]
    assert merged.inits[1].opts == ("MODEL.RESNETS.NORM", "FrozenBN", "SOLVER.BASE_LR", "0.01")
    assert merged.inits[4] == Init("extra", "stage:ssl", "", ("SEED", "1"))
    assert merged.submitit == {"timeout_min": 4320, "slurm_partition": "dev", "slurm_constraint": "volta32gb"}
    assert spec.schedules == ["1x", "2x"] and len(spec.inits) == 4  # the file's study is left as read
    with pytest.raises(ValueError, match="--submitit 'timeout_min': expected NAME=VALUE"):
        command_line_study(spec, submitit=["timeout_min"])
    with pytest.raises(ValueError, match="no config: give --config-file"):
        command_line_study(None, inits=["s=scratch"], schedules=["1x"])
    with pytest.raises(ValueError, match="no initializations"):
        command_line_study(None, config_file="c.yaml", schedules=["1x"])


def test_specs_resolve_relative_checkpoints_only(tmp_path):
    assert resolve_spec("scratch", str(tmp_path)) == SCRATCH
    assert resolve_spec("stage:ssl", str(tmp_path)) == "stage:ssl"
    assert resolve_spec("detectron2://ImageNetPretrained/MSRA/R-50.pkl", "/x") == (
        "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    )
    assert resolve_spec("w/a.pth", str(tmp_path)) == str(tmp_path / "w" / "a.pth")
    assert resolve_spec("/abs/a.pth", str(tmp_path)) == "/abs/a.pth"


def test_only_keeps_the_rows_and_the_stages_they_need(study_file):
    spec = read_study_file(str(study_file))
    chain = command_line_study(spec, only=["chain", "scratch"], stage_opts=[["ssl", "SEED", "2"]])
    assert [i.name for i in chain.inits] == ["scratch", "chain"]  # the file's order
    assert [s.name for s in chain.stages] == ["ssl", "box"]  # box, and ssl that box starts from
    assert chain.stages[0].opts == ("SEED", "2")
    assert command_line_study(spec, only=["zoo"]).stages == []
    with pytest.raises(ValueError, match="--only \\['nope'\\]: no such initialization"):
        command_line_study(spec, only=["nope"])
    with pytest.raises(ValueError, match="--stage-opts nope: the study has no stage 'nope'"):
        command_line_study(spec, stage_opts=[["nope", "SEED", "1"]])
