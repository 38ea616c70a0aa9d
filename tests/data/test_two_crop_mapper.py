"""TwoCropDatasetMapper: MoCo v2's two crops, aligned frames of a pair, cross-modal views."""

import random

import cv2
import numpy as np
import pytest
import torch

from detpre.data.dataset_mappers import MAPPER_REGISTRY
from detpre.data.dataset_mappers.two_crop_mapper import TwoCropDatasetMapper

H, W = 96, 128


@pytest.fixture
def record(tmp_path):
    """A visible frame of horizontal and vertical ramps (every pixel tells where it is) and a
    thermal frame equal to its grey version, as a pixel-aligned pair would be."""
    yy, xx = np.mgrid[0:H, 0:W]
    visible = np.stack([xx * 2, yy * 2, 255 - xx], axis=2).clip(0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "v.png"), visible)
    cv2.imwrite(str(tmp_path / "t.png"), cv2.cvtColor(visible, cv2.COLOR_BGR2GRAY))
    return {
        "file_name": str(tmp_path / "v.png"),
        "lwir_file_name": str(tmp_path / "t.png"),
        "image_id": 3,
        "height": H,
        "width": W,
        "annotations": [{"bbox": [0, 0, 5, 5], "bbox_mode": 1, "category_id": 0}],
    }


def _mapper(cfg, fmt="BGR", cross_modal=False, photometric=True, **input_keys):
    cfg.INPUT.FORMAT = fmt
    channels = len(fmt)
    cfg.MODEL.PIXEL_MEAN = [100.0] * channels
    cfg.MODEL.PIXEL_STD = [50.0] * channels
    cfg.MODEL.IMAGE_DOMAIN.CROSS_MODAL = cross_modal
    cfg.INPUT.IMAGE_DOMAIN.CROP_SIZE = 32
    if not photometric:
        cfg.INPUT.IMAGE_DOMAIN.COLOR_JITTER_PROB = 0.0
        cfg.INPUT.IMAGE_DOMAIN.GRAYSCALE_PROB = 0.0
        cfg.INPUT.IMAGE_DOMAIN.BLUR_PROB = 0.0
    for key, value in input_keys.items():
        setattr(cfg.INPUT.IMAGE_DOMAIN, key, value)
    return MAPPER_REGISTRY.get("TwoCropDatasetMapper")(cfg, True)


def _seeded(mapper, record, seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return mapper(record)


def test_two_independent_square_crops_of_an_image(cfg, record):
    mapper = _mapper(cfg)
    out = _seeded(mapper, record, 0)
    assert (out["file_name"], out["image_id"], out["height"], out["width"]) == (record["file_name"], 3, H, W)
    assert "annotations" not in out and "instances" not in out["views"][0]
    views = out["views"]
    assert [v["image"].shape for v in views] == [(3, 32, 32)] * 2 and views[0]["image"].dtype == torch.uint8
    assert [v["modality"] for v in views] == [None, None]
    assert not torch.equal(views[0]["image"], views[1]["image"])
    # Seeded as detpre's loader seeds each batch: the same seed, the same views.
    again = _seeded(mapper, record, 0)["views"]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(views, again))


def test_the_two_views_draw_their_geometry_independently(cfg, record):
    """Without photometric ops the views differ only by crop and flip: each view draws its own
    (they differ within one sample, their flips disagree in some samples and agree in others),
    and another seed draws other crops."""
    mapper = _mapper(cfg, photometric=False)
    disagree = 0
    for seed in range(20):
        first, second = (v["image"] for v in _seeded(mapper, record, seed)["views"])
        assert not torch.equal(first, second)
        red = [v[2, 16].float() for v in (first, second)]  # BGR: channel 2 is red, 255 - x
        disagree += int((red[0][0] < red[0][-1]) != (red[1][0] < red[1][-1]))
    assert 2 <= disagree <= 18  # about half of 20 when the flips are drawn per view
    one, other = (_seeded(mapper, record, seed)["views"][0]["image"] for seed in (0, 1))
    assert not torch.equal(one, other)


def test_every_value_comes_from_input_image_domain(cfg, record):
    """The defaults are MoCo v2's aug+, and each INPUT.IMAGE_DOMAIN key reaches the transforms."""
    assert cfg.INPUT.IMAGE_DOMAIN.CROP_SIZE == 224  # the helper below makes it 32
    default = _mapper(cfg, fmt="BGRT")
    assert (default.crop_scale, default.flip_prob, default.shared_crop) == ((0.2, 1.0), 0.5, True)
    assert default.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    jitter, grayscale, blur = default.photometric["visible"].transforms
    assert (jitter.p, grayscale.p, blur.p, blur.transforms[0].sigma) == (0.8, 0.2, 0.5, (0.1, 2.0))
    color = jitter.transforms[0]
    assert (color.brightness, color.contrast, color.saturation) == ((0.6, 1.4),) * 3 and color.hue == (-0.1, 0.1)

    mapper = _mapper(
        cfg,
        fmt="BGRT",
        CROP_SIZE=40,
        CROP_SCALE=(0.3, 0.9),
        CROP_RATIO=(0.5, 2.0),
        COLOR_JITTER=(0.1, 0.2, 0.3, 0.05),
        COLOR_JITTER_PROB=0.7,
        GRAYSCALE_PROB=0.1,
        BLUR_SIGMA=(0.5, 1.5),
        BLUR_PROB=0.3,
        FLIP_PROB=0.25,
        CROSS_MODAL_SHARED_CROP=False,
    )
    assert (mapper.crop_size, mapper.crop_scale, mapper.crop_ratio) == (40, (0.3, 0.9), (0.5, 2.0))
    assert (mapper.flip_prob, mapper.shared_crop) == (0.25, False)
    jitter, grayscale, blur = mapper.photometric["visible"].transforms
    assert (jitter.p, grayscale.p, blur.p, blur.transforms[0].sigma) == (0.7, 0.1, 0.3, (0.5, 1.5))
    color = jitter.transforms[0]
    assert (color.brightness, color.contrast, color.saturation) == ((0.9, 1.1), (0.8, 1.2), (0.7, 1.3))
    assert color.hue == (-0.05, 0.05)
    thermal_jitter, thermal_blur = mapper.photometric["lwir"].transforms
    assert (thermal_jitter.p, thermal_blur.p, thermal_blur.transforms[0].sigma) == (0.7, 0.3, (0.5, 1.5))
    assert (thermal_jitter.transforms[0].brightness, thermal_jitter.transforms[0].contrast) == ((0.9, 1.1), (0.8, 1.2))
    assert [v["image"].shape for v in _seeded(mapper, record, 0)["views"]] == [(4, 40, 40)] * 2


def test_crops_follow_moco_v2s_area_range_and_flip(cfg, record):
    """Without photometric ops a pixel's value says where it came from: the crop's span of the
    horizontal ramp (red = 255 - x) stays within the area range, and flips reverse it."""
    mapper = _mapper(cfg, photometric=False, CROP_SCALE=(0.2, 1.0), FLIP_PROB=0.5)
    flipped, spans = 0, []
    for seed in range(40):
        for view in _seeded(mapper, record, seed)["views"]:
            red = view["image"][2, 16].float()  # BGR: channel 2 is red, 255 - x
            flipped += int(red[0] < red[-1])
            spans.append(abs(float(red[0] - red[-1])) / (W - 1))
    assert 20 < flipped < 60  # about half of 80 views
    assert min(spans) > 0.2**0.5 * 0.75 * 0.9 and max(spans) <= 1.0  # width >= sqrt(0.2 * 3/4) of W


def test_thermal_frames_get_no_colour_only_ops(cfg, record):
    mapper = _mapper(cfg, fmt="BGRT")
    visible = [type(t).__name__ for t in mapper.photometric["visible"].transforms]
    thermal = mapper.photometric["lwir"].transforms
    assert visible == ["RandomApply", "RandomGrayscale", "RandomApply"]
    assert [type(t).__name__ for t in thermal] == ["RandomApply", "RandomApply"]
    jitter = thermal[0].transforms[0]
    assert jitter.saturation is None and jitter.hue is None and jitter.brightness == (0.6, 1.4)
    view = _seeded(mapper, record, 1)["views"][0]["image"]
    assert view.shape == (4, 32, 32)


def test_the_frames_of_a_pair_share_each_views_crop_and_flip(cfg, record):
    mapper = _mapper(cfg, fmt="BGRT", photometric=False)
    for seed in range(6):
        for view in _seeded(mapper, record, seed)["views"]:
            image = view["image"].numpy()
            grey = cv2.cvtColor(np.ascontiguousarray(image[:3].transpose(1, 2, 0)), cv2.COLOR_BGR2GRAY)
            assert np.abs(grey.astype(int) - image[3]).max() <= 2  # thermal = grey(visible) pixel by pixel


def test_cross_modal_views_show_one_frame_each_with_one_crop(cfg, record):
    mapper = _mapper(cfg, fmt="BGRT", cross_modal=True, photometric=False)
    for seed in range(4):
        visible, thermal = _seeded(mapper, record, seed)["views"]
        assert (visible["modality"], thermal["modality"]) == ("visible", "lwir")
        assert visible["image"][:3].any() and not visible["image"][3].any()
        assert thermal["image"][3].any() and not thermal["image"][:3].any()
        grey = cv2.cvtColor(np.ascontiguousarray(visible["image"][:3].numpy().transpose(1, 2, 0)), cv2.COLOR_BGR2GRAY)
        assert np.abs(grey.astype(int) - thermal["image"][3].numpy()).max() <= 2  # shared crop and flip
    independent = _mapper(cfg, fmt="BGRT", cross_modal=True, photometric=False, CROSS_MODAL_SHARED_CROP=False)
    visible, thermal = _seeded(independent, record, 0)["views"]
    grey = cv2.cvtColor(np.ascontiguousarray(visible["image"][:3].numpy().transpose(1, 2, 0)), cv2.COLOR_BGR2GRAY)
    assert np.abs(grey.astype(int) - thermal["image"][3].numpy()).max() > 10


def test_bad_settings_are_named(cfg, record):
    with pytest.raises(ValueError, match="pre-training batches only"):
        TwoCropDatasetMapper(False, image_format="BGR")
    with pytest.raises(ValueError, match="CROSS_MODAL.*'BGR'"):
        _mapper(cfg, fmt="BGR", cross_modal=True)
    with pytest.raises(ValueError, match="CROP_SCALE"):
        TwoCropDatasetMapper(True, crop_scale=(0.5, 0.2))
