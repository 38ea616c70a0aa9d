"""tools/linear_probe.py on a generated image folder with a tiny random backbone."""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

import detpre.analysis.features as features
from detpre import add_detpre_config
from detpre.analysis.features import image_folder, pooled_features
from detpre.analysis.probe import run_probe, split_indices

from conftest import load_tool

main = load_tool("linear_probe").main

# class -> (BGR colour, shape)
CLASSES = {
    "red_disc": ((40, 40, 220), "disc"),
    "green_square": ((40, 200, 40), "square"),
    "blue_bar": ((220, 60, 40), "bar"),
}
PER_CLASS = 14
STAGES = ["res4", "res5"]
SIZE = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """ROOT/<class>/*.jpg: a coloured shape at a random place and size on a noisy grey field."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for name, (bgr, shape) in CLASSES.items():
        os.makedirs(root / name)
        for i in range(PER_CLASS):
            img = rng.integers(90, 160, (48, 56, 3)).astype(np.uint8)
            cx, cy, r = rng.integers(18, 38), rng.integers(16, 32), int(rng.integers(7, 13))
            color = tuple(int(c) for c in np.clip(np.array(bgr) + rng.integers(-25, 25, 3), 0, 255))
            if shape == "disc":
                cv2.circle(img, (int(cx), int(cy)), r, color, -1)
            elif shape == "square":
                cv2.rectangle(img, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), color, -1)
            else:
                cv2.rectangle(img, (int(cx - 2 * r), int(cy - 3)), (int(cx + 2 * r), int(cy + 3)), color, -1)
            cv2.imwrite(str(root / name / f"{i:03d}.jpg"), img)
    return str(root)


def tiny_cfg():
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.RESNETS.NORM = 18, 64, "BN"
    return cfg


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random ResNet-18 saved as a detector checkpoint would hold it (``backbone.*``)."""
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = STAGES
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random_r18.pth"
    torch.save({"model": {f"backbone.{k}": v for k, v in build_backbone(cfg).state_dict().items()}}, path)
    return str(path)


def test_probe_is_above_chance_and_matches_a_direct_sklearn_fit(folder, weights, tmp_path):
    cfg = tiny_cfg()
    results = run_probe(
        cfg,
        weights,
        folder,
        STAGES,
        str(tmp_path / "cache"),
        size=SIZE,
        val_fraction=0.25,
        test_fraction=0.25,
        cs=(0.01, 1.0, 100.0),
    )
    chance = 1 / len(CLASSES)
    paths, labels, _ = image_folder(folder)
    train, val, test = split_indices(labels, 0.25, 0.25, seed=0)
    feats = pooled_features(cfg, weights, folder, paths, STAGES, SIZE, str(tmp_path / "cache"))
    for stage, r in results.items():
        assert r.top1 > chance + 0.25, (stage, r)
        assert (r.n_train, r.n_val, r.n_test) == (len(train), len(val), len(test))
        x = feats[stage]
        scaler = StandardScaler().fit(x[train])
        val_acc = {
            c: accuracy_score(
                labels[val],
                LogisticRegression(C=c, max_iter=1000)
                .fit(scaler.transform(x[train]), labels[train])
                .predict(scaler.transform(x[val])),
            )
            for c in (0.01, 1.0, 100.0)
        }
        assert r.val_top1 == pytest.approx(val_acc)
        assert val_acc[r.c] == max(val_acc.values())
        fit = np.concatenate([train, val])
        scaler = StandardScaler().fit(x[fit])
        predicted = (
            LogisticRegression(C=r.c, max_iter=1000)
            .fit(scaler.transform(x[fit]), labels[fit])
            .predict(scaler.transform(x[test]))
        )
        assert r.top1 == pytest.approx(accuracy_score(labels[test], predicted))
        assert r.mean_per_class == pytest.approx(balanced_accuracy_score(labels[test], predicted))


def test_a_random_init_embeds_the_test_folder_with_the_network_of_the_training_folder(folder):
    """Without weights the backbone is a fresh random draw at each build: the test folder must go
    through the same one, or a classifier fitted on one network is scored on another's features."""
    torch.manual_seed(0)
    results = run_probe(tiny_cfg(), "", folder, ["res5"], None, test_data=folder, size=SIZE, cs=(1.0,))
    # Fitted on train + validation of these very images: a second network would score about chance.
    assert results["res5"].top1 > 0.9, results["res5"]


def test_features_are_cached_and_the_cache_follows_the_checkpoint(folder, weights, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    cfg = tiny_cfg()
    paths, _, _ = image_folder(folder)
    first = pooled_features(cfg, weights, folder, paths, STAGES, SIZE, cache, batch_size=7)
    assert sorted(f.split("__")[2] for f in os.listdir(cache)) == STAGES
    assert all(f.startswith("shapes") and "random_r18" in f for f in os.listdir(cache))

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(features, "load_backbone", no_extraction)
    again = pooled_features(cfg, weights, folder, paths, STAGES, SIZE, cache)
    for stage in STAGES:
        np.testing.assert_array_equal(first[stage], again[stage])
    # Another input size, or a rewritten checkpoint, is another key: extraction is needed.
    with pytest.raises(AssertionError, match="extracted again"):
        pooled_features(cfg, weights, folder, paths, STAGES, SIZE + 8, cache)
    os.utime(weights, ns=(1, 1))
    with pytest.raises(AssertionError, match="extracted again"):
        pooled_features(cfg, weights, folder, paths, ["res4"], SIZE, cache)


def test_batching_does_not_change_features(folder, weights):
    cfg = tiny_cfg()
    paths = image_folder(folder)[0][::5]
    one = pooled_features(cfg, weights, folder, paths, ["res5"], SIZE, None, batch_size=1)
    many = pooled_features(cfg, weights, folder, paths, ["res5"], SIZE, None, batch_size=64)
    np.testing.assert_allclose(one["res5"], many["res5"], rtol=1e-4, atol=1e-3)  # conv algorithms differ by batch
    assert one["res5"].shape == (len(paths), 512)


def test_cli_writes_report_and_names_bad_input(folder, weights, tmp_path, capsys):
    out = tmp_path / "probe.json"
    argv = [
        "--weights",
        weights,
        "--data",
        folder,
        "--stages",
        "res4",
        "--size",
        str(SIZE),
        "--cs",
        "1",
        "10",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output",
        str(out),
        "MODEL.RESNETS.DEPTH",
        "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "64",
        "MODEL.RESNETS.NORM",
        "BN",
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["stages"]["res4"]["top1"] > 1 / len(CLASSES)
    assert "res4" in capsys.readouterr().out
    assert main(["--weights", weights, "--data", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    # The default R50 config cannot take R18 weights: a clear error, not a probe of a random network.
    assert main(["--weights", weights, "--data", folder, "--size", str(SIZE), "--cache-dir", ""]) == 2
    assert "does not fill" in capsys.readouterr().err


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        image_folder(str(tmp_path / "nowhere"))
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="has no images"):
        image_folder(str(tmp_path))


def test_probe_of_a_multispectral_backbone_reads_pairs(folder, tmp_path, capsys):
    """ROOT/<class>/{visible,lwir}/<frame>: a BGRT (early-fusion) config probes the pairs."""
    root = tmp_path / "pairs"
    for name in CLASSES:
        for i, image in enumerate(sorted(os.listdir(os.path.join(folder, name)))):
            bgr = cv2.imread(os.path.join(folder, name, image))
            for modality, frame in (("visible", bgr), ("lwir", cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))):
                os.makedirs(root / name / modality, exist_ok=True)
                cv2.imwrite(str(root / name / modality / f"I{i:05d}.png"), frame)
    out = tmp_path / "probe.json"
    argv = [
        "--data",
        str(root),
        "--stages",
        "res5",
        "--size",
        str(SIZE),
        "--cs",
        "1",
        "--cache-dir",
        "",
        "--output",
        str(out),
        "MODEL.RESNETS.DEPTH",
        "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "64",
        "MODEL.RESNETS.NORM",
        "BN",
        "INPUT.FORMAT",
        "BGRT",
        "INPUT.DATASET_MAPPER_NAME",
        "MultispectralDatasetMapper",
        "MODEL.PIXEL_MEAN",
        "[100.0, 100.0, 100.0, 40.0]",
        "MODEL.PIXEL_STD",
        "[50.0, 50.0, 50.0, 20.0]",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())["stages"]["res5"]
    assert report["n_train"] + report["n_val"] + report["n_test"] == len(CLASSES) * PER_CLASS
