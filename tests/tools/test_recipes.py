"""docs/recipes.md works as written: every code block of it runs here, on toy data."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from conftest import REPO

RECIPES = (REPO / "docs" / "recipes.md").read_text()


def blocks(title: str, language: str):
    start = RECIPES.index(f"\n## {title}\n")
    end = RECIPES.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", RECIPES[start : end if end >= 0 else None], flags=re.S)


def write_modules(title: str, folder: Path, replace=(), language: str = "python") -> None:
    """Each python (or yaml) block of the recipe, saved under the file name of its first line."""
    for code in blocks(title, language):
        name = code.splitlines()[0].lstrip("# ").strip()
        for old, new in replace:
            code = code.replace(old, new)
        (folder / name).write_text(code)


def run_commands(title: str, folder: Path, env: dict) -> None:
    for command in blocks(title, "bash"):
        argv = [
            sys.executable if w == "python" else str(folder / w) if w.endswith(".py") and "/" not in w else w
            for w in shlex.split(command.replace("output/", f"{folder}/output/"))
        ]
        done = subprocess.run(
            argv, cwd=REPO, env=dict(env, PYTHONPATH=str(folder)), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"


def import_module(folder: Path, name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop(name, None)
    return __import__(name)


@pytest.mark.slow
def test_a_coco_scored_dataset_trains_through_a_launcher_of_its_own(demo_env, tmp_path):
    write_modules("Add a dataset scored by COCO AP", tmp_path)
    run_commands("Add a dataset scored by COCO AP", tmp_path, demo_env)
    log = (tmp_path / "output" / "shapes" / "log.txt").read_text()
    assert "Evaluation results for shapes_val_10_s0 in csv format" in log


def test_a_kaist_layout_dataset_is_scored_by_the_miss_rate(shared_data, tmp_path, monkeypatch):
    from detectron2.structures import Boxes, BoxMode, Instances

    from detpre.config import load_cfg
    from detpre.engine.trainer import DetpreTrainer
    from detpre.evaluation import KAISTEvaluator

    root = shared_data / "kaist-fixture"
    write_modules("Add a dataset scored by the miss rate (KAIST layout)", tmp_path, [("/path/to/kaist", str(root))])
    for name in ("my_kaist_test", "my_kaist_train"):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    import_module(tmp_path, "my_kaist", monkeypatch)
    cfg = load_cfg("", ["DATASETS.TEST", "('my_kaist_test',)"])
    evaluator = DetpreTrainer.build_evaluator(cfg, "my_kaist_test", str(tmp_path / "eval"))
    assert isinstance(evaluator, KAISTEvaluator)
    # The ground truth as predictions: every miss rate is 0.
    evaluator.reset()
    for d in DatasetCatalog.get("my_kaist_test"):
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.ones(len(boxes))
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
    results = evaluator.evaluate()["kaist"]
    assert results["MR_all"] < 1e-6
    trainable = DatasetCatalog.get("my_kaist_train")
    assert any(a["iscrowd"] for d in trainable for a in d["annotations"])  # the training setting's ignores


def test_a_registered_norm_is_built_everywhere_it_is_named(tmp_path, monkeypatch):
    from detpre.layers import NORM_REGISTRY

    write_modules("Add a normalization", tmp_path)
    monkeypatch.chdir(REPO)
    if "GN16" in NORM_REGISTRY:
        NORM_REGISTRY._obj_map.pop("GN16")  # a second import in this process registers it again
    model = import_module(tmp_path, "build_with_gn16", monkeypatch).model
    groups = {name: m.num_groups for name, m in model.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups and set(groups.values()) == {16}
    assert any(n.startswith("backbone.bottom_up.") for n in groups) and any(
        n.startswith("backbone.fpn_") for n in groups
    )


def test_a_registered_evaluator_scores_its_datasets(demo_env, tmp_path, monkeypatch):
    from detpre.config import load_cfg
    from detpre.engine.trainer import DetpreTrainer

    write_modules("Add an evaluator", tmp_path)
    import_module(tmp_path, "my_evaluator", monkeypatch)
    opts = ["MODEL.DEVICE", "cpu", "DATASETS.TEST", "('shapes_counted_4_s0',)", "OUTPUT_DIR", str(tmp_path)]
    cfg = load_cfg(str(REPO / "configs" / "Demo" / "faster_rcnn_R18_FPN_scratch.yaml"), opts)
    results = DetpreTrainer.test(cfg, DetpreTrainer.build_model(cfg))
    assert set(results) == {"count"} and results["count"]["per_image"] >= 0


def test_a_torchvision_checkpoint_joins_the_init_study(demo_env, tmp_path):
    write_modules("Add an initialization to the weight-init study", tmp_path)
    subprocess.run([sys.executable, "make_resnet18.py"], cwd=tmp_path, check=True, timeout=300)
    command = blocks("Add an initialization to the weight-init study", "bash")[0]
    argv = [sys.executable if w == "python" else w for w in shlex.split(command)]
    argv = [str(tmp_path / w) if w == "resnet18.pth" or w.startswith("tv_r18=") else w for w in argv]
    argv = [f"tv_r18={tmp_path / 'resnet18.pth'}" if w.startswith(str(tmp_path / "tv_r18=")) else w for w in argv]
    argv = [w.replace("output/", f"{tmp_path}/output/") for w in argv]
    done = subprocess.run(argv, cwd=REPO, env=demo_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for run in ("scratch_1x", "scratch_2x", "tv_r18_1x", "tv_r18_2x"):
        assert run in done.stdout
    assert (tmp_path / "output" / "study" / "weights" / "tv_r18.pkl").is_file()  # converted on the fly


def test_a_study_file_trains_a_stage_once_and_converts_it_for_its_row(demo_env, tmp_path):
    title = "Add a pre-training stage to the weight-init study"
    write_modules(title, tmp_path, [("/path/to/detpre", str(REPO))], language="yaml")
    (command,) = blocks(title, "bash")
    argv = [sys.executable if w == "python" else w for w in shlex.split(command)]
    argv = [str(tmp_path / w) if w == "my_study.yaml" else w.replace("output/", f"{tmp_path}/output/") for w in argv]
    done = subprocess.run(argv, cwd=REPO, env=demo_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [line.split(":")[0] for line in done.stdout.splitlines() if line and not line.startswith(" ")]
    assert jobs == [
        "pretrain_mocov2",
        "convert_mocov2_to_init_mocov2",
        "scratch_0.5x",
        "scratch_1x",
        "mocov2_0.5x",
        "mocov2_1x",
    ]
    assert "MAX_ITER 100 x 32 images" in done.stdout  # the stage's own opts
