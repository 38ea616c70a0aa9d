"""Configs at toy scale, for tests that build and step every config: what costs time without
changing the model is shrunk (few proposals and RoIs, two 64x96 images, no weights)."""

from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.structures import BitMasks, Boxes, Instances, Keypoints

from detpre import add_detpre_config

H, W = 64, 96
SMALL = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "16",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "20",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "8",
]


def load_config(path: Path):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(str(path))
    return cfg


def drop_weights(node) -> None:
    """Blank every string key named ``*WEIGHTS`` (MODEL.WEIGHTS, per-stream weights of fusion
    backbones, ...): nothing is downloaded, and random init is all a build-and-step needs."""
    for key, value in node.items():
        if isinstance(value, CfgNode):
            drop_weights(value)
        elif key.endswith("WEIGHTS") and isinstance(value, str):
            node[key] = ""


def toy_instances(cfg, seed: int) -> Instances:
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[8.0, 8.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0], [50.0, 30.0, 80.0, 62.0]])
    n = len(boxes)
    inst = Instances((H, W))
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.randint(0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, (n,), generator=g)
    if cfg.MODEL.MASK_ON:
        masks = torch.zeros(n, H, W, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[i, y0:y1, x0:x1] = True
        inst.gt_masks = BitMasks(masks)
    if cfg.MODEL.KEYPOINT_ON:
        k = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
        t = torch.rand(n, k, 2, generator=g)
        xy = boxes[:, None, :2] + t * (boxes[:, None, 2:] - boxes[:, None, :2])
        inst.gt_keypoints = Keypoints(torch.cat([xy, torch.full((n, k, 1), 2.0)], dim=2))
    return inst


def toy_batch(cfg):
    """Two synthetic images; for box-domain pre-training, each in two views whose instances
    are the proposals (with their identities); for image-domain pre-training, two views of
    one size as ``TwoCropDatasetMapper`` gives them (cross-modal: the visible, then the
    thermal one)."""
    channels = len(cfg.MODEL.PIXEL_MEAN)
    g = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (channels, H, W), dtype=torch.uint8, generator=g),
            "instances": toy_instances(cfg, seed),
            "height": H,
            "width": W,
        }
        for seed in range(2)
    ]
    if cfg.MODEL.META_ARCHITECTURE == "ImageDomainPretrainer":
        shown = ("visible", "lwir") if cfg.MODEL.IMAGE_DOMAIN.CROSS_MODAL else (None, None)
        return [
            {"views": [{"image": image, "modality": m} for image, m in zip((x["image"], x["image"].flip(-1)), shown)]}
            for x in batch
        ]
    if cfg.MODEL.META_ARCHITECTURE != "BoxDomainPretrainer":
        return batch
    for x in batch:
        x["instances"].gt_ids = torch.arange(len(x["instances"]))
    return [{"views": [x, dict(x, image=x["image"].flip(-1))]} for x in batch]


def train_step(model, optimizer, batch):
    """One SGD step of ``model`` on ``batch``; its losses."""
    losses = model(batch)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    return losses
