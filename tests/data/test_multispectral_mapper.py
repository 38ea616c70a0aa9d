"""MultispectralDatasetMapper: channels, shared geometry, per-modality photometry, boxes."""

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

import detpre  # noqa: F401
from detpre.data.dataset_mappers import MAPPER_REGISTRY
from detpre.data.dataset_mappers.multispectral_mapper import MultispectralDatasetMapper
from detpre.data.datasets.kaist import register_kaist
from detpre.data.multispectral import MultispectralFormat

CHANNELS = {"BGR": 3, "BGRT": 4, "RGBT": 4, "BGRTTT": 6, "TTT": 3, "T": 1}


def mapper_cfg(cfg, fmt: str, min_size: int = 512, flip: str = "none"):
    cfg.INPUT.FORMAT = fmt
    cfg.MODEL.PIXEL_MEAN = [100.0] * CHANNELS[fmt]
    cfg.MODEL.PIXEL_STD = [50.0] * CHANNELS[fmt]
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.INPUT.RANDOM_FLIP = flip
    return cfg


def write_lossless(path: Path, image: np.ndarray) -> str:
    """KAIST file names end in .jpg; the content is PNG so pixels compare exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", image)[1].tobytes())
    return str(path)


def synthetic_pair(tmp_path: Path, seed: int = 0):
    """A visible frame with texture, and an LWIR frame equal to its green channel."""
    rng = np.random.default_rng(seed)
    visible = cv2.resize(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8), (640, 512))
    visible[100:300, 50:120] = (10, 200, 30)  # a sharp block, so a wrong flip shows
    lwir = visible[:, :, 1].copy()
    return (
        visible,
        lwir,
        {
            "file_name": write_lossless(tmp_path / "visible" / "I00000.jpg", visible),
            "lwir_file_name": write_lossless(tmp_path / "lwir" / "I00000.jpg", np.repeat(lwir[:, :, None], 3, 2)),
            "height": 512,
            "width": 640,
            "image_id": 0,
            "annotations": [],
        },
    )


@pytest.fixture
def fixture_dicts(shared_data):
    name = "kaist_fixture_mapper"
    if name not in DatasetCatalog.list():
        register_kaist(name, str(shared_data / "kaist-fixture"), "test-fixture", "original")
    return DatasetCatalog.get(name)


def test_registered_and_built_from_config(cfg):
    cfg.INPUT.DATASET_MAPPER_NAME = "MultispectralDatasetMapper"
    mapper = MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)(mapper_cfg(cfg, "BGRT"), True)
    assert isinstance(mapper, MultispectralDatasetMapper)
    assert mapper.format == MultispectralFormat("BGR", 1)


@pytest.mark.parametrize("fmt", ["BGRT", "BGRTTT", "RGBT", "TTT"])
def test_fixture_maps_to_the_format_channels(cfg, fixture_dicts, fmt):
    d = fixture_dicts[2]
    out = MultispectralDatasetMapper(mapper_cfg(cfg, fmt, min_size=256), is_train=True)(d)
    image = out["image"]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (CHANNELS[fmt], 256, 320)
    visible = cv2.resize(cv2.imread(d["file_name"]), (320, 256), interpolation=cv2.INTER_LINEAR)
    lwir = cv2.resize(cv2.imread(d["lwir_file_name"], cv2.IMREAD_GRAYSCALE), (320, 256))
    thermal = image[-1].numpy().astype(int)
    assert np.abs(thermal - lwir).mean() < 2  # same frame (PIL vs OpenCV resampling aside)
    if fmt.startswith(("BGR", "RGB")):
        order = [0, 1, 2] if fmt.startswith("BGR") else [2, 1, 0]
        assert np.abs(image[:3].numpy().astype(int) - visible.transpose(2, 0, 1)[order]).mean() < 2
    for c in range(CHANNELS[fmt] - fmt.count("T"), CHANNELS[fmt]):
        assert torch.equal(image[c], image[-1])
    assert out["instances"].image_size == (256, 320)


def test_same_geometry_on_both_frames(cfg, tmp_path):
    """Flip, resize and crop drawn once: the thermal channel stays the green channel."""
    _, _, d = synthetic_pair(tmp_path)
    cfg = mapper_cfg(cfg, "BGRT", flip="horizontal")
    cfg.INPUT.MIN_SIZE_TRAIN = (300, 400, 500)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.SIZE = [0.6, 0.8]
    mapper = MultispectralDatasetMapper(cfg, is_train=True)
    flipped = set()
    for seed in range(8):
        np.random.seed(seed)
        image = mapper(copy.deepcopy(d))["image"]
        assert torch.equal(image[1], image[3]), f"seed {seed}: thermal and visible geometry differ"
        # The block (green) sits left of centre unless the frame was flipped.
        green = image[1].float() - image[0].float()
        flipped.add(bool(green[:, : green.shape[1] // 2].sum() < green[:, green.shape[1] // 2 :].sum()))
    assert flipped == {True, False}


def test_photometric_augmentation_is_per_modality(cfg, tmp_path):
    visible, lwir, d = synthetic_pair(tmp_path)
    plain = MultispectralDatasetMapper(mapper_cfg(cfg, "BGRT"), is_train=True)(copy.deepcopy(d))["image"]
    cfg.INPUT.KAIST.LWIR_BRIGHTNESS = (0.5, 0.5)
    darker = MultispectralDatasetMapper(cfg, is_train=True)(copy.deepcopy(d))["image"]
    assert torch.equal(darker[:3], plain[:3])
    assert torch.equal(darker[3], (plain[3].float() * 0.5).to(torch.uint8))
    cfg.INPUT.KAIST.LWIR_BRIGHTNESS = (1.0, 1.0)
    cfg.INPUT.KAIST.VISIBLE_SATURATION = (0.0, 0.0)  # grey: the 3 colour channels equal
    grey = MultispectralDatasetMapper(cfg, is_train=True)(copy.deepcopy(d))["image"]
    assert torch.equal(grey[3], plain[3])
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    rgb = visible[:, :, ::-1].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(grey[0].numpy().astype(int) - rgb.astype(int)).max() <= 1  # RGB weights


def test_ignore_regions_never_become_ground_truth(cfg, fixture_dicts):
    mapper = MultispectralDatasetMapper(mapper_cfg(cfg, "BGRT"), is_train=True)
    for d in fixture_dicts:
        positives = [a for a in d["annotations"] if not a["iscrowd"]]
        out = mapper(d)
        assert len(out["instances"]) == len(positives)
        expected = BoxMode.convert(np.array([a["bbox"] for a in positives]), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        assert np.allclose(out["instances"].gt_boxes.tensor.numpy(), expected)
    assert any(a["iscrowd"] for d in fixture_dicts for a in d["annotations"])


@pytest.mark.parametrize(
    "source, expected",
    [
        ("visible", [[100, 100, 140, 180], [300, 100, 330, 160]]),
        ("lwir", [[110, 96, 150, 176], [500, 200, 520, 240]]),
        ("union", [[100, 96, 150, 180], [300, 100, 330, 160], [500, 200, 520, 240]]),
        ("average", [[105, 98, 145, 178], [300, 100, 330, 160], [500, 200, 520, 240]]),
    ],
)
def test_paired_box_source(cfg, tmp_path, source, expected):
    _, _, d = synthetic_pair(tmp_path)
    base = {"bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}
    d["annotations"] = [
        {
            **base,
            "bbox": [100, 100, 40, 80],
            "bbox_visible": [100, 100, 40, 80],
            "bbox_lwir": [110, 96, 40, 80],
        },
        {**base, "bbox": [300, 100, 30, 60], "bbox_visible": [300, 100, 30, 60], "bbox_lwir": None},
        {**base, "bbox": [500, 200, 20, 40], "bbox_visible": None, "bbox_lwir": [500, 200, 20, 40]},
        {
            **base,
            "bbox": [10, 10, 20, 40],
            "bbox_visible": [10, 10, 20, 40],
            "bbox_lwir": [12, 10, 20, 40],
            "iscrowd": 1,
        },
    ]
    cfg.INPUT.KAIST.BOX_SOURCE = source
    out = MultispectralDatasetMapper(mapper_cfg(cfg, "BGRT"), is_train=True)(d)
    assert out["instances"].gt_boxes.tensor.tolist() == expected


def test_inference_keeps_frame_fields_and_drops_annotations(cfg, fixture_dicts):
    out = MultispectralDatasetMapper(mapper_cfg(cfg, "BGRTTT", min_size=128), is_train=False)(fixture_dicts[0])
    assert tuple(out["image"].shape) == (6, 128, 160)
    assert "annotations" not in out and "instances" not in out
    assert (out["set_id"], out["video_id"], out["frame_id"], out["day"]) == ("set06", "V001", "I00459", True)
    assert (out["height"], out["width"]) == (512, 640)


def test_pixel_statistics_must_match_the_format(cfg):
    mapper_cfg(cfg, "BGRT")
    cfg.MODEL.PIXEL_STD = [50.0] * 3
    with pytest.raises(ValueError, match=r"'BGRT' has 4 channels but MODEL.PIXEL_STD has 3"):
        MultispectralDatasetMapper(cfg, is_train=True)
    cfg.INPUT.FORMAT = "BGRX"
    with pytest.raises(ValueError, match="INPUT.FORMAT 'BGRX' is not a multispectral format"):
        MultispectralDatasetMapper(cfg, is_train=True)
    mapper_cfg(cfg, "BGRT")
    cfg.INPUT.KAIST.BOX_SOURCE = "thermal"
    with pytest.raises(ValueError, match="BOX_SOURCE 'thermal'"):
        MultispectralDatasetMapper(cfg, is_train=True)


def test_unreadable_or_mismatched_frames_are_named(cfg, tmp_path):
    _, lwir, d = synthetic_pair(tmp_path)
    mapper = MultispectralDatasetMapper(mapper_cfg(cfg, "BGRT"), is_train=True)
    write_lossless(Path(d["lwir_file_name"]), lwir[:500])
    with pytest.raises(
        ValueError, match=r"visible/I00000\.jpg is 640x512 but LWIR frame .*lwir/I00000\.jpg is 640x500"
    ):
        mapper(copy.deepcopy(d))
    Path(d["lwir_file_name"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"lwir/I00000\.jpg"):
        mapper(copy.deepcopy(d))
    # A frame cut short (an interrupted copy) is refused by name, not decoded to grey.
    visible = Path(d["file_name"])
    ok, data = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 256, (512, 640, 3), dtype=np.uint8))
    visible.write_bytes(data.tobytes()[:2000])
    write_lossless(Path(d["lwir_file_name"]), lwir)
    with pytest.raises(ValueError, match=rf"Cannot read image {visible}: truncated JPEG"):
        mapper(copy.deepcopy(d))
