"""TwoViewDatasetMapper: independent views, the same proposals in each, identities kept."""

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from detpre.data.dataset_mappers import MAPPER_REGISTRY
from detpre.data.dataset_mappers.two_view_mapper import PHOTOMETRIC_RECIPES, AlignDetPhotometric, TwoViewDatasetMapper

# Distinct BGR colours of the proposals painted into the test image.
COLORS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255)]
BOXES = np.array([[10, 10, 40, 50], [60, 20, 110, 60], [20, 70, 70, 110], [120, 80, 150, 115]], np.float32)


@pytest.fixture
def record(tmp_path):
    """A 160 x 120 image with one coloured rectangle per proposal, and its thermal twin."""
    image = np.full((120, 160, 3), 128, np.uint8)
    thermal = np.zeros((120, 160), np.uint8)
    for i, (box, color) in enumerate(zip(BOXES.astype(int), COLORS)):
        cv2.rectangle(image, tuple(box[:2]), tuple(box[2:] - 1), color, -1)
        cv2.rectangle(thermal, tuple(box[:2]), tuple(box[2:] - 1), 60 * (i + 1), -1)
    cv2.imwrite(str(tmp_path / "v.png"), image)
    cv2.imwrite(str(tmp_path / "t.png"), thermal)
    return {
        "file_name": str(tmp_path / "v.png"),
        "lwir_file_name": str(tmp_path / "t.png"),
        "image_id": 7,
        "height": 120,
        "width": 160,
        # As Detectron2 loads a proposal file (XYWH here, to exercise the conversion).
        "proposal_boxes": BoxMode.convert(BOXES.copy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS),
        "proposal_bbox_mode": BoxMode.XYWH_ABS,
        "annotations": [{"bbox": [0, 0, 5, 5], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 3}],
    }


def _mapper(cfg, **overrides):
    cfg.INPUT.MIN_SIZE_TRAIN = (60, 90, 150)
    cfg.INPUT.MAX_SIZE_TRAIN = 400
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    for key, value in overrides.items():
        node, name = key.rsplit(".", 1)
        setattr(cfg.INPUT.get(node) if node else cfg.INPUT, name, value)
    return MAPPER_REGISTRY.get("TwoViewDatasetMapper")(cfg, True)


def _center_pixels(image: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
    centers = ((boxes[:, :2] + boxes[:, 2:]) / 2).long()
    return image[:, centers[:, 1], centers[:, 0]].T.numpy()


def test_each_view_carries_every_proposal_where_the_image_shows_it(cfg, record):
    mapper = _mapper(cfg, **{"TWO_VIEW.PHOTOMETRIC": "none"})
    sizes, flips = set(), set()
    for seed in range(8):
        np.random.seed(seed)
        out = mapper(dict(record))
        assert out["image_id"] == 7 and len(out["views"]) == 2
        for view in out["views"]:
            image, instances = view["image"], view["instances"]
            assert image.dtype == torch.uint8 and image.shape[0] == 3
            assert instances.image_size == tuple(image.shape[1:])
            assert instances.gt_ids.tolist() == [0, 1, 2, 3]  # nothing is cropped away
            assert (instances.gt_classes == 0).all()
            # The box of proposal i still frames rectangle i in this view's pixels.
            np.testing.assert_allclose(_center_pixels(image, instances.gt_boxes.tensor), COLORS, atol=1)
            scale = image.shape[1] / 120
            widths = instances.gt_boxes.tensor[:, 2] - instances.gt_boxes.tensor[:, 0]
            np.testing.assert_allclose(widths, (BOXES[:, 2] - BOXES[:, 0]) * scale, rtol=0.02)
            sizes.add(image.shape[1])
            flips.add(bool(instances.gt_boxes.tensor[0, 0] > image.shape[2] / 2))
        assert out["views"][0]["image"].data_ptr() != out["views"][1]["image"].data_ptr()
    # The views draw their scale and flip independently.
    assert len(sizes) > 1 and flips == {True, False}


class _FixedCrop(T.Augmentation):
    """Crop the top-left 60 x 50 pixels (a deterministic stand-in for RandomCrop)."""

    def get_transform(self, image):
        return T.CropTransform(0, 0, 60, 50)


def test_proposals_mostly_outside_a_view_are_dropped_from_it_only(record):
    mapper = TwoViewDatasetMapper(augmentations=[_FixedCrop()], photometric="none", min_visible_fraction=0.5)
    views = mapper(dict(record))["views"]
    for view in views:
        instances = view["instances"]
        assert tuple(view["image"].shape[1:]) == (50, 60)
        # Box 0 is inside; box 1 starts at x = 60, boxes 2 and 3 below y = 50: all outside.
        assert instances.gt_ids.tolist() == [0]
        np.testing.assert_allclose(instances.gt_boxes.tensor.numpy(), BOXES[:1])
    # Half inside is kept, less is not: box [40, 10, 80, 50] is 20/40 inside the crop.
    record["proposal_boxes"] = np.array([[40, 10, 80, 50], [45, 10, 85, 50]], np.float32)
    record["proposal_bbox_mode"] = BoxMode.XYXY_ABS
    instances = mapper(dict(record))["views"][0]["instances"]
    assert instances.gt_ids.tolist() == [0]
    np.testing.assert_allclose(instances.gt_boxes.tensor.numpy(), [[40, 10, 60, 50]])


def test_crop_from_config_keeps_identities(cfg, record):
    mapper = _mapper(cfg, **{"CROP.ENABLED": True, "CROP.TYPE": "absolute", "CROP.SIZE": [70, 70]})
    for seed in range(5):
        np.random.seed(seed)
        torch.manual_seed(seed)
        views = mapper(dict(record))["views"]
        for view in views:
            ids = view["instances"].gt_ids
            assert ids.tolist() == sorted(set(ids.tolist()))
            assert set(ids.tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize("recipe", ["aligndet", "byol"])
def test_photometric_recipes_change_pixels_not_geometry(record, recipe):
    geometry = [T.ResizeShortestEdge(90, 400)]
    plain = TwoViewDatasetMapper(augmentations=geometry, photometric="none")
    augmented = TwoViewDatasetMapper(augmentations=geometry, photometric=recipe)
    changed = 0
    for seed in range(6):
        np.random.seed(seed)
        torch.manual_seed(seed)
        a = plain(dict(record))["views"]
        b = augmented(dict(record))["views"]
        for va, vb in zip(a, b):
            assert va["image"].shape == vb["image"].shape and vb["image"].dtype == torch.uint8
            assert torch.equal(va["instances"].gt_boxes.tensor, vb["instances"].gt_boxes.tensor)
            changed += int(not torch.equal(va["image"], vb["image"]))
    assert changed >= 6  # of 12 views (AlignDet's Identity leaves 1 in 9 as they are)


def test_multispectral_views_share_geometry_across_modalities(cfg, record):
    cfg.INPUT.FORMAT = "BGRT"
    cfg.MODEL.PIXEL_MEAN = [0.0] * 4
    cfg.MODEL.PIXEL_STD = [1.0] * 4
    mapper = _mapper(cfg, **{"TWO_VIEW.PHOTOMETRIC": "none"})
    for seed in range(4):
        np.random.seed(seed)
        for view in mapper(dict(record))["views"]:
            assert view["image"].shape[0] == 4
            pixels = _center_pixels(view["image"], view["instances"].gt_boxes.tensor)
            np.testing.assert_allclose(pixels[:, :3], COLORS, atol=1)
            np.testing.assert_allclose(pixels[:, 3], [60, 120, 180, 240], atol=1)
    # With photometric augmentation on, a thermal-only format is still one repeated plane.
    cfg.INPUT.FORMAT = "TTT"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [0.0] * 3, [1.0] * 3
    image = _mapper(cfg, **{"TWO_VIEW.PHOTOMETRIC": "byol"})(dict(record))["views"][0]["image"]
    assert image.shape[0] == 3 and torch.equal(image[0], image[2])


def test_bad_inputs_are_named(cfg, record):
    mapper = _mapper(cfg)
    no_props = {k: v for k, v in record.items() if not k.startswith("proposal")}
    with pytest.raises(KeyError, match="LOAD_PROPOSALS"):
        mapper(no_props)
    with pytest.raises(ValueError, match="pre-training batches only"):
        TwoViewDatasetMapper(cfg, False)
    with pytest.raises(ValueError, match="MIN_VISIBLE_FRACTION"):
        TwoViewDatasetMapper(augmentations=[], min_visible_fraction=0.0)
    cfg.INPUT.FORMAT = "BGRT"
    mapper = TwoViewDatasetMapper(augmentations=[], image_format="BGRT")
    with pytest.raises(KeyError, match="lwir_file_name"):
        mapper({k: v for k, v in record.items() if k != "lwir_file_name"})


# The nine operations of AlignDet's OneOf (configs/_base_/datasets/coco_soft-teacher.py).
ALIGNDET_OPS = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "Posterize",
)


def test_the_default_photometric_augmentation_is_aligndets(cfg):
    assert cfg.INPUT.TWO_VIEW.PHOTOMETRIC == "aligndet"
    mapper = _mapper(cfg)
    assert isinstance(mapper.visible_photometric, AlignDetPhotometric)
    assert tuple(AlignDetPhotometric.OPS) == ALIGNDET_OPS
    assert sorted(PHOTOMETRIC_RECIPES) == ["aligndet", "byol", "none"]
    with pytest.raises(ValueError, match="PHOTOMETRIC 'strong'"):
        TwoViewDatasetMapper(augmentations=[], photometric="strong")


def test_each_view_gets_exactly_one_photometric_operation(cfg, record, monkeypatch):
    applied = []

    def counted(name, op):
        def apply(image, m):
            applied.append((name, m))
            return op(image, m)

        return apply

    counting = {name: counted(name, op) for name, op in AlignDetPhotometric.OPS.items()}
    monkeypatch.setattr(AlignDetPhotometric, "OPS", counting)
    mapper = _mapper(cfg)
    for seed in range(60):
        np.random.seed(seed)
        mapper(dict(record))
    assert len(applied) == 2 * 60  # one operation per view, two views per image
    names = {name for name, _ in applied}
    assert names == set(ALIGNDET_OPS)  # uniform over the nine: all drawn in 120 views
    assert {m for _, m in applied} == set(range(1, 10))  # magnitude 1-9


def test_aligndet_magnitudes():
    ops = AlignDetPhotometric()
    ramp = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")
    thresholds = []
    for m in range(1, 10):
        out = np.asarray(ops.apply(ramp, "Solarize", m)).ravel()
        thresholds.append(int(np.flatnonzero(out != np.arange(256))[0]))  # first inverted value
    assert thresholds == [25, 51, 76, 102, 128, 153, 179, 204, 230]
    bits = [int(np.log2(len(np.unique(np.asarray(ops.apply(ramp, "Posterize", m)))))) for m in range(1, 10)]
    assert bits == [4, 4, 3, 3, 2, 2, 2, 1, 1]
    grey = Image.fromarray(np.full((4, 4), 100, np.uint8), "L")
    brightness = [int(np.asarray(ops.apply(grey, "Brightness", m))[0, 0]) for m in (1, 5, 9)]
    assert brightness == [28, 100, 172]  # 100 x (m * 1.8 / 10 + 0.1): 0.28, 1.0, 1.72
    assert ops.apply(grey, "Identity", 9) is grey


def test_max_proposals_keeps_the_first_ones_in_both_views(record):
    mapper = TwoViewDatasetMapper(augmentations=[], photometric="none", max_proposals=2)
    for view in mapper(dict(record))["views"]:
        assert view["instances"].gt_ids.tolist() == [0, 1]
        np.testing.assert_allclose(view["instances"].gt_boxes.tensor.numpy(), BOXES[:2])
    with pytest.raises(ValueError, match="MAX_PROPOSALS"):
        TwoViewDatasetMapper(augmentations=[], max_proposals=-1)
