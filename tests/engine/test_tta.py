"""TEST.AUG: Detectron2's test-time augmentation in detpre's evaluation, end to end on the demo
model (periodic evaluation in training, then --eval-only), and on detpre's model wrappers."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data.transforms import ResizeTransform
from PIL import Image

from detpre.config import ConfigError
from detpre.engine.defaults import detpre_argument_parser
from detpre.engine.train_net import run
from detpre.engine.trainer import DetpreTrainer
from detpre.engine.tta import ChannelwiseDatasetMapperTTA, build_tta_model, check_tta_supported
from detpre.utils.metrics import metric_series

from conftest import DEMO_CONFIG, REPO, TINY_DEMO_OPTS

VAL = "detpre_demo_val_10_s0"
TTA_OPTS = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(96, 128)", "TEST.AUG.MAX_SIZE", "192"]


@pytest.mark.slow
def test_tta_is_evaluated_periodically_and_in_eval_only_under_its_own_name(demo_env, tmp_path):
    out = tmp_path / "run"
    train = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "train_net.py"),
            "--config-file",
            str(DEMO_CONFIG),
            *TINY_DEMO_OPTS,
            "SOLVER.MAX_ITER",
            "40",
            "SOLVER.STEPS",
            "(30,)",
            "SOLVER.WARMUP_ITERS",
            "5",
            "SOLVER.CHECKPOINT_PERIOD",
            "1000",
            "TEST.EVAL_PERIOD",
            "20",
            "DATASETS.TEST",
            f"('{VAL}',)",
            "SEED",
            "0",
            *TTA_OPTS,
            "OUTPUT_DIR",
            str(out),
        ],
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    plain, tta = metric_series(str(out), "bbox/AP"), metric_series(str(out), "bbox_TTA/AP")
    assert [it for it, _ in plain] == [it for it, _ in tta] == [20, 40]
    assert (out / "inference_TTA" / VAL / "coco_instances_results.json").is_file()

    # --eval-only of the final weights, in channels-last memory this time.
    args = [
        "--config-file",
        str(DEMO_CONFIG),
        "--eval-only",
        *TINY_DEMO_OPTS,
        "DATASETS.TEST",
        f"('{VAL}',)",
        *TTA_OPTS,
        "MODEL.CHANNELS_LAST",
        "True",
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    ]
    results = run(detpre_argument_parser().parse_args(args))
    assert set(results) == {"bbox", "bbox_TTA"} and set(results["bbox_TTA"]) == set(results["bbox"])
    # The numbers of the training run's last evaluation (up to the memory layout's rounding)...
    assert results["bbox"]["AP"] == pytest.approx(plain[-1][1], abs=0.5)
    assert results["bbox_TTA"]["AP"] == pytest.approx(tta[-1][1], abs=0.5)
    # ... and test-time augmentation (2 sizes x flip, merged by NMS) is another evaluation (40
    # iterations from scratch: AP 1.7, with TTA 1.2 on the 2-core CPU).
    assert results["bbox"]["AP"] > 0 and results["bbox_TTA"]["AP"] != pytest.approx(results["bbox"]["AP"], abs=0.05)


def _demo_model(cfg, *opts):
    cfg.merge_from_file(str(DEMO_CONFIG))
    cfg.merge_from_list([*TINY_DEMO_OPTS, *TTA_OPTS, *opts])
    return DetpreTrainer.build_model(cfg)


def test_tta_wraps_detpres_execution_options(cfg):
    """MODEL.CHANNELS_LAST and MODEL.BACKBONE.COMPILE work in place: the model stays a
    GeneralizedRCNN, which Detectron2's TTA wrapper takes (channels-last is run above)."""
    compiled = ["MODEL.BACKBONE.COMPILE", "default", "MODEL.BACKBONE.COMPILE_BACKEND", "eager"]
    model = _demo_model(cfg, "MODEL.CHANNELS_LAST", "True", *compiled)
    assert model.backbone._compiled_call_impl is not None
    assert build_tta_model(cfg, model).model is model


def test_unsupported_models_fail_with_the_key_named(cfg):
    retinanet = cfg.clone()
    retinanet.merge_from_list(["MODEL.META_ARCHITECTURE", "RetinaNet", *TTA_OPTS])
    with pytest.raises(ConfigError, match="TEST.AUG.ENABLED.*GeneralizedRCNN.*'RetinaNet' builds a Linear"):
        check_tta_supported(retinanet, torch.nn.Linear(1, 1))
    model = _demo_model(cfg)
    cfg.defrost()
    cfg.MODEL.KEYPOINT_ON = True
    with pytest.raises(ConfigError, match="MODEL.KEYPOINT_ON"):
        check_tta_supported(cfg, model)


def test_multispectral_images_are_resized_channel_by_channel(cfg):
    """Detectron2's TTA mapper resizes a 4-channel uint8 image with PIL as RGBA, premultiplying
    the alpha: the thermal channel would darken the visible ones."""
    cfg.merge_from_list(TTA_OPTS)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (4, 48, 64), dtype=np.uint8))
    image[3, :24] = 0  # cold top half
    outputs = ChannelwiseDatasetMapperTTA(cfg)({"image": image, "height": 48, "width": 64})
    assert len(outputs) == 4  # 2 sizes x (plain, flipped)
    plain_96 = outputs[0]["image"]
    assert plain_96.shape == (4, 96, 128) and plain_96.dtype == torch.uint8
    resize = ResizeTransform(48, 64, 96, 128, Image.BILINEAR)
    for c in range(4):
        alone = resize.apply_image(np.ascontiguousarray(image[c, :, :, None].numpy()))[..., 0]
        np.testing.assert_array_equal(plain_96[c].numpy(), alone, err_msg=f"channel {c}")
    assert torch.equal(outputs[1]["image"], plain_96.flip(-1))
