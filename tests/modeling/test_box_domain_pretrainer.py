"""BoxDomainPretrainer: online + momentum detectors, EMA, freezing, logging, conversion."""

import logging
import math

import pytest
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from toy_configs import train_step

from detpre import add_detpre_config
from detpre.modeling.meta_arch import BoxDomainPretrainer
from detpre.modeling.meta_arch.box_domain_heads import BACKGROUND_ID, BoxSampler, is_untrained
from detpre.modeling.meta_arch.box_domain_pretrainer import cosine_momentum
from detpre.modeling.meta_arch.box_domain_weights import FINAL_LAYER, box_domain_to_detector, is_final_regression

from conftest import REPO, load_tool

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(cfg, detector="GeneralizedRCNN", roi_heads="StandardROIHeads"):
    """A GN ResNet-18-FPN detector small enough to train a step in a second on a CPU."""
    c = cfg
    c.MODEL.DEVICE = "cpu"
    c.MODEL.META_ARCHITECTURE = "BoxDomainPretrainer"
    c.MODEL.BOX_DOMAIN.DETECTOR_ARCHITECTURE = detector
    c.MODEL.BOX_DOMAIN.EMBED_DIM = 16
    c.MODEL.RESNETS.DEPTH = 18
    c.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    c.MODEL.RESNETS.NORM = "GN"
    c.MODEL.FPN.OUT_CHANNELS = 32
    c.MODEL.FPN.NORM = "GN"
    c.MODEL.ANCHOR_GENERATOR.SIZES = [[8], [16], [32], [64], [128]]
    c.SOLVER.MAX_ITER = 10
    if detector == "RetinaNet":
        c.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
        c.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
        c.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
        c.MODEL.RETINANET.NUM_CONVS = 2
        return c
    c.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    c.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    c.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    c.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    c.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    c.MODEL.RPN.POST_NMS_TOPK_TEST = 64
    c.MODEL.ROI_HEADS.NAME = roi_heads
    c.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    c.MODEL.ROI_HEADS.NUM_CLASSES = 1
    c.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    c.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    c.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    c.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = "Cascade" in roi_heads
    c.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    return c


def fake_view(seed, height=64, width=80, n=4):
    """A random image with ``n`` proposals (identities 0..n-1)."""
    g = torch.Generator().manual_seed(seed)
    instances = Instances((height, width))
    corner = torch.rand(n, 2, generator=g) * torch.tensor([width / 2, height / 2])
    instances.gt_boxes = Boxes(torch.cat([corner, corner + torch.tensor([width / 3, height / 3])], dim=1))
    instances.gt_classes = torch.zeros(n, dtype=torch.int64)
    instances.gt_ids = torch.arange(n)
    return {"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g), "instances": instances}


def fake_batch(seed=0):
    # The second image has no proposal left in its second view.
    return [
        {"views": [fake_view(seed), fake_view(seed + 1)]},
        {"views": [fake_view(seed + 2, 72, 64), fake_view(seed + 3, 72, 64, n=0)]},
    ]


def _optimizer(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)


@pytest.mark.parametrize(
    "detector, roi_heads, expected",
    [
        ("GeneralizedRCNN", "StandardROIHeads", {"loss_rpn_cls", "loss_rpn_loc", "loss_box_reg", "loss_box_contrast"}),
        (
            "GeneralizedRCNN",
            "CascadeROIHeads",
            {"loss_rpn_cls", "loss_rpn_loc"}
            | {f"loss_box_{kind}_stage{k}" for kind in ("reg", "contrast") for k in range(3)},
        ),
        ("RetinaNet", "", {"loss_box_reg", "loss_box_contrast"}),
    ],
)
def test_training_step_trains_the_heads_only_and_logs(cfg, detector, roi_heads, expected):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(cfg, detector, roi_heads or "StandardROIHeads"))
    assert isinstance(model, BoxDomainPretrainer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # The online detector's keys are exactly the plain detector's.
    plain = cfg.clone()
    plain.MODEL.META_ARCHITECTURE = detector
    assert {k[len("online.") :] for k in before if k.startswith("online.")} == set(build_model(plain).state_dict())

    with EventStorage() as storage:
        losses = train_step(model, _optimizer(model), fake_batch())
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    logged = storage.latest()
    assert logged["box_domain/momentum"][0] == pytest.approx(0.996)
    suffix = "_stage0" if roi_heads == "CascadeROIHeads" else ""
    assert logged[f"box_domain/positives_per_image{suffix}"][0] > 0
    assert 0 < logged[f"box_domain/embedding_spread{suffix}"][0] < 2

    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    online = {k for k in changed if k.startswith("online.")}
    # Frozen: the image-domain backbone and everything pre-training does not use.
    assert not any(".bottom_up." in k for k in changed)
    assert not any(is_untrained(k[len("online.") :]) for k in changed)
    assert not any(k.startswith(("momentum.", "momentum_head.")) for k in changed)  # EMA comes next step
    assert any(".fpn_" in k for k in online) and any(k.startswith("head.") for k in changed)
    if detector == "GeneralizedRCNN":
        assert any("proposal_generator" in k for k in online)
        assert any("box_predictor" in k and "bbox_pred" in k for k in online)
    else:
        assert any("head.bbox_pred" in k for k in online) and any("head.cls_subnet" in k for k in online)


@pytest.mark.parametrize("detector", ["GeneralizedRCNN", "RetinaNet"])
def test_a_batch_without_proposals_gives_zero_box_losses(cfg, detector):
    model = build_model(tiny_cfg(cfg, detector))
    with EventStorage():
        losses = train_step(model, _optimizer(model), [{"views": [fake_view(1, n=0), fake_view(2, n=0)]}])
    assert losses["loss_box_contrast"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    assert all(torch.isfinite(v) for v in losses.values())


def test_momentum_branch_follows_the_online_one_by_ema(cfg):
    torch.manual_seed(0)
    tiny_cfg(cfg)
    cfg.SOLVER.MAX_ITER = 4
    model = build_model(cfg)
    optimizer = _optimizer(model)
    online = dict(model.online.named_parameters())
    momentum = dict(model.momentum.named_parameters())
    assert all(torch.equal(online[k], momentum[k]) for k in online)
    with EventStorage() as storage:
        for step in range(3):
            expected_m = cosine_momentum(step - 1, 4, 0.996, 1.0)
            snapshot = {k: (online[k].detach().clone(), momentum[k].detach().clone()) for k in online}
            train_step(model, optimizer, fake_batch(step))
            storage.step()
            if step == 0:
                continue
            key = "roi_heads.box_head.fc1.weight"
            o, m = snapshot[key]
            torch.testing.assert_close(momentum[key], expected_m * m + (1 - expected_m) * o)
            # The momentum branch never gets gradient.
            assert all(p.grad is None for p in model.momentum.parameters())
    assert int(model.steps) == 3
    assert "steps" in model.state_dict()


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(25, 100, 0.99, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(25, 100, 0.9, 1.0) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)


def test_unfrozen_backbone_trains_and_detector_weights_are_loaded(cfg, tmp_path):
    torch.manual_seed(0)
    tiny_cfg(cfg)
    plain = cfg.clone()
    plain.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    image_domain = build_model(plain)
    DetectionCheckpointer(image_domain, save_dir=str(tmp_path)).save("image_domain")
    cfg.MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS = str(tmp_path / "image_domain.pth")
    cfg.MODEL.BOX_DOMAIN.FREEZE_BACKBONE = False
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # Detectron2's own freezing of the stem and res2
    torch.manual_seed(1)  # another initialisation: only the loaded weights can match
    model = build_model(cfg)
    for name, value in image_domain.state_dict().items():
        assert torch.equal(model.online.state_dict()[name], value), name
        assert torch.equal(model.momentum.state_dict()[name], value), name
    assert all(p.requires_grad for p in model.online.backbone.bottom_up.parameters())
    stem = model.online.backbone.bottom_up.stem.conv1.weight.clone()
    with EventStorage():
        train_step(model, _optimizer(model), fake_batch())
    assert not torch.equal(stem, model.online.backbone.bottom_up.stem.conv1.weight)


def test_inference_runs_the_online_detector(cfg):
    """At inference the pre-trainer is its online detector: the same boxes and scores, not the
    momentum copy's (which differs once the EMA has moved)."""
    model = build_model(tiny_cfg(cfg)).eval()
    with torch.no_grad():
        for p in model.momentum.parameters():
            p.add_(0.05)
        image = [{"image": fake_view(0)["image"], "height": 64, "width": 80}]
        out = model(image)[0]["instances"]
        online = model.online(image)[0]["instances"]
        momentum = model.momentum(image)[0]["instances"]
    assert out.image_size == (64, 80) and len(out) > 0
    assert torch.equal(out.pred_boxes.tensor, online.pred_boxes.tensor) and torch.equal(out.scores, online.scores)
    assert not (len(momentum) == len(out) and torch.equal(momentum.scores, out.scores))


def test_unsupported_detectors_are_named(cfg):
    with pytest.raises(ValueError, match="CLS_AGNOSTIC_BBOX_REG"):
        c = tiny_cfg(cfg.clone())
        c.MODEL.ROI_HEADS.NUM_CLASSES = 3
        build_model(c)
    with pytest.raises(TypeError, match="Res5ROIHeads"):
        c = tiny_cfg(cfg.clone(), roi_heads="Res5ROIHeads")
        c.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        c.MODEL.RESNETS.OUT_FEATURES = ["res4"]
        c.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
        c.MODEL.RPN.IN_FEATURES = ["res4"]
        c.MODEL.ANCHOR_GENERATOR.SIZES = [[8, 16, 32]]
        build_model(c)
    with pytest.raises(ValueError, match="BASE_MOMENTUM"):
        c = tiny_cfg(cfg.clone())
        c.MODEL.BOX_DOMAIN.BASE_MOMENTUM = 1.5
        build_model(c)
    model = build_model(tiny_cfg(cfg.clone()))
    with pytest.raises(ValueError, match="TwoViewDatasetMapper"), EventStorage():
        model([{"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}])


def test_conversion_keeps_the_online_detector_and_reinitialises_classifiers(cfg):
    torch.manual_seed(0)
    tiny_cfg(cfg)
    cfg.MODEL.MASK_ON = True
    model = build_model(cfg)
    with EventStorage():
        train_step(model, _optimizer(model), fake_batch())
    finetune = cfg.clone()
    finetune.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    finetune.MODEL.ROI_HEADS.NUM_CLASSES = 5  # class-specific regression: 20 outputs
    target = build_model(finetune).state_dict()
    weights, report = box_domain_to_detector(model.state_dict(), target)
    assert not any(k.startswith(("online.", "momentum", "head.")) for k in weights)
    assert {"steps"} <= set(report.dropped) and any(k.startswith("momentum.") for k in report.dropped)
    assert any(k.startswith("head.projectors") for k in report.dropped)
    for name in ("roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.weight"):
        assert name in report.reinitialized and name not in weights
    assert any(k.startswith("roi_heads.mask_head.") for k in report.reinitialized)
    fpn = "backbone.fpn_lateral2.weight"
    assert torch.equal(weights[fpn], model.online.state_dict()[fpn])
    assert set(weights) | set(report.reinitialized) == set(target)
    assert "re-initialised" in report.summary()
    with pytest.raises(ValueError, match="online"):
        box_domain_to_detector(target)


CONFIGS = REPO / "configs" / "AlignDet"
# (pre-training config, its fine-tuning config)
PAIRS = [
    ("pretrain/faster_rcnn_R_50_FPN.yaml", "finetune/faster_rcnn_R_50_FPN_1x.yaml"),
    ("pretrain/mask_rcnn_R_50_FPN.yaml", "finetune/mask_rcnn_R_50_FPN_1x.yaml"),
    ("pretrain/cascade_mask_rcnn_R_50_FPN.yaml", "finetune/cascade_mask_rcnn_R_50_FPN_1x.yaml"),
    ("pretrain/retinanet_R_50_FPN.yaml", "finetune/retinanet_R_50_FPN_1x.yaml"),
    (
        "KAIST/pretrain_faster_rcnn_R_50_FPN_early_fusion_gn_imagenet.yaml",
        "KAIST/finetune_faster_rcnn_R_50_FPN_early_fusion_gn_imagenet.yaml",
    ),
    ("Demo/pretrain_faster_rcnn_R18_FPN.yaml", "Demo/finetune_faster_rcnn_R18_FPN.yaml"),
]
SMALL = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "20",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "20",
    "MODEL.BOX_DOMAIN.SAMPLES_PER_IMAGE",
    "16",
]


def _config(path):
    c = get_cfg()
    add_detpre_config(c)
    c.merge_from_file(str(CONFIGS / path))
    c.merge_from_list(SMALL)
    c.MODEL.WEIGHTS = ""
    c.MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS = ""  # nothing to download: random init
    return c


def test_every_aligndet_pretraining_config_is_paired():
    pretraining = set()
    for path in CONFIGS.glob("**/*.yaml"):
        c = get_cfg()
        add_detpre_config(c)
        c.merge_from_file(str(path))
        if c.MODEL.META_ARCHITECTURE == "BoxDomainPretrainer" and not path.name.startswith("Base-"):
            pretraining.add(str(path.relative_to(CONFIGS)))
    assert pretraining == {p for p, _ in PAIRS}


@pytest.mark.slow
@pytest.mark.parametrize("pretrain, finetune", PAIRS, ids=[p for p, _ in PAIRS])
def test_aligndet_configs_pretrain_convert_and_load(pretrain, finetune):
    torch.manual_seed(0)
    cfg = _config(pretrain)
    assert cfg.MODEL.META_ARCHITECTURE == "BoxDomainPretrainer" and cfg.MODEL.LOAD_PROPOSALS
    assert cfg.INPUT.DATASET_MAPPER_NAME == "TwoViewDatasetMapper" and not cfg.DATASETS.TEST
    model = build_model(cfg)
    channels = len(cfg.MODEL.PIXEL_MEAN)
    batch = fake_batch()
    for x in batch:
        for view in x["views"]:
            view["image"] = view["image"][:1].expand(channels, -1, -1).contiguous()
    with EventStorage():
        losses = train_step(model, _optimizer(model), batch)
    assert losses and all(torch.isfinite(v) for v in losses.values())

    target_cfg = _config(finetune)
    ft = build_model(target_cfg)
    weights, report = box_domain_to_detector(model.state_dict(), ft.state_dict())
    incompatible = ft.load_state_dict(weights, strict=False)
    assert not incompatible.unexpected_keys
    # BN step counters are not weights (the report leaves them out).
    missing = {k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")}
    assert missing == set(report.reinitialized)
    assert not report.mismatched, report.mismatched
    assert any(k.endswith("cls_score.weight") for k in report.reinitialized)
    # Everything pre-training trained outside the classifiers and last regression layers carries over.
    trained_heads = [k for k in report.kept if "fpn_" in k or "proposal_generator" in k or "head." in k]
    assert trained_heads
    if pretrain.startswith("pretrain/") and "retinanet" not in pretrain and "cascade" not in pretrain:
        assert "roi_heads.box_head.conv4.weight" in report.kept  # the 4conv1fc head exists and carries over
    # AlignDet's fine-tuning recipe: 1.5x the plain detector's LR, half its weight decay.
    plain = get_cfg()
    add_detpre_config(plain)
    parent = yaml.safe_load((CONFIGS / finetune).read_text())["_BASE_"]  # the plain detector's config
    plain.merge_from_file(str((CONFIGS / finetune).parent / parent))
    assert target_cfg.SOLVER.BASE_LR == pytest.approx(1.5 * plain.SOLVER.BASE_LR)
    assert target_cfg.SOLVER.WEIGHT_DECAY == pytest.approx(plain.SOLVER.WEIGHT_DECAY / 2)


def test_collapsed_embeddings_are_warned_about_in_the_log(cfg, caplog):
    model = build_model(tiny_cfg(cfg))
    for projector in model.head.projectors:  # every box embeds to the same vector
        torch.nn.init.zeros_(projector[2].weight)
        torch.nn.init.ones_(projector[2].bias)
    with EventStorage(7) as storage, caplog.at_level(logging.WARNING):
        model(fake_batch())
    assert storage.latest()["box_domain/embedding_spread"][0] < 1e-3
    assert any("collapsing at iteration 7" in r.getMessage() for r in caplog.records)


def test_convert_pretrained_refuses_another_model_and_names_bad_files(tmp_path, capsys):
    """tools/convert_pretrained.py: a fine-tuning config of another backbone, an empty or a text
    file are one error line each (exit 2), and nothing is written."""
    main = load_tool("convert_pretrained").main

    torch.manual_seed(0)
    checkpoint = tmp_path / "pre.pth"
    torch.save({"model": build_model(_config("Demo/pretrain_faster_rcnn_R18_FPN.yaml")).state_dict()}, checkpoint)
    finetune = str(CONFIGS / "Demo" / "finetune_faster_rcnn_R18_FPN.yaml")
    out = tmp_path / "detector.pth"
    assert main([str(checkpoint), str(out), "--config-file", finetune, "MODEL.DEVICE", "cpu"]) == 0
    assert out.is_file()
    capsys.readouterr()

    other = tmp_path / "other.pth"
    assert main([str(checkpoint), str(other), "--config-file", finetune, "MODEL.RESNETS.DEPTH", "34"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "describe different models" in err[0] and "nothing was written" in err[0]
    assert not other.exists()
    for name, content in (("empty.pth", b""), ("notes.pth", b"these are not weights\n")):
        (tmp_path / name).write_bytes(content)
        assert main([str(tmp_path / name), str(other)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / name}") or f"Checkpoint {tmp_path / name}" in err, err
        assert not other.exists()


def test_box_sampler_follows_mmdets_random_sampler():
    labels = torch.tensor([1] * 10 + [0] * 50 + [-1] * 5)
    torch.manual_seed(0)
    pos, bg = BoxSampler(8, 1.0, False)(labels)
    assert len(pos) == 8 and len(bg) == 0 and (labels[pos] == 1).all()
    pos, bg = BoxSampler(20, 0.25, True)(labels)  # HTC: 512 at 25%
    assert (len(pos), len(bg)) == (5, 15) and (labels[bg] == 0).all()
    pos, bg = BoxSampler(4096, 1.0, True)(labels)  # all positives, background fills the rest
    assert (len(pos), len(bg)) == (10, 50)
    assert len(set(pos.tolist())) == 10
    with pytest.raises(ValueError, match="POSITIVE_FRACTION"):
        BoxSampler(16, 0.0)


def test_retinanet_background_anchors_are_sampled_as_negatives(cfg):
    torch.manual_seed(0)
    tiny_cfg(cfg, "RetinaNet")
    cfg.MODEL.BOX_DOMAIN.SAMPLES_PER_IMAGE = 64
    cfg.MODEL.BOX_DOMAIN.BACKGROUND_NEGATIVES = True
    model = build_model(cfg)
    batch = fake_batch()
    targets, _ = model._targets(batch)
    embeddings, losses = model.head(model.online, [x["views"][0] for x in batch], targets, True)
    ids = embeddings[0].ids
    positives = int((ids != BACKGROUND_ID).sum())
    assert 0 < positives < len(ids) == 2 * 64  # positives first, background up to 64 an image
    with EventStorage() as storage:
        losses = train_step(model, _optimizer(model), batch)
    assert all(torch.isfinite(v) for v in losses.values())
    assert storage.latest()["box_domain/background_per_image"][0] > 0


def test_cascade_stage_weights_and_refinement(cfg, monkeypatch):
    tiny_cfg(cfg, roi_heads="CascadeROIHeads")
    losses = {}
    for weights in ((1.0, 1.0, 1.0), (1.0, 0.5, 0.25)):
        cfg.MODEL.BOX_DOMAIN.STAGE_WEIGHTS = weights
        torch.manual_seed(0)
        model = build_model(cfg)
        torch.manual_seed(1)
        with EventStorage():
            losses[weights] = model(fake_batch())
    even, official = losses[(1.0, 1.0, 1.0)], losses[(1.0, 0.5, 0.25)]
    for k, w in enumerate((1.0, 0.5, 0.25)):
        for kind in ("reg", "contrast"):
            key = f"loss_box_{kind}_stage{k}"
            assert official[key].item() == pytest.approx(w * even[key].item(), rel=1e-5), key
    assert official["loss_rpn_cls"].item() == pytest.approx(even["loss_rpn_cls"].item())  # once, unweighted

    # AlignDet's HTC (interleaved=True) assigns every stage the same boxes; Detectron2's cascade refines.
    for refine in (False, True):
        cfg.MODEL.BOX_DOMAIN.REFINE_CASCADE_STAGES = refine
        model = build_model(cfg)
        seen = []

        def recording(boxes, targets, matcher, real=model.head._assign, seen=seen):
            seen.append(boxes[0].tensor.clone())
            return real(boxes, targets, matcher)

        monkeypatch.setattr(model.head, "_assign", recording)
        with EventStorage():
            model(fake_batch())
        same = all(s.shape == seen[0].shape and torch.equal(s, seen[0]) for s in seen[:3])
        assert same != refine
    with pytest.raises(ValueError, match="STAGE_WEIGHTS"):
        cfg.MODEL.BOX_DOMAIN.STAGE_WEIGHTS = (1.0, 0.5)
        build_model(cfg)


@pytest.mark.parametrize(
    "detector, roi_heads",
    [
        ("GeneralizedRCNN", "StandardROIHeads"),
        ("GeneralizedRCNN", "CascadeROIHeads"),
        ("RetinaNet", "StandardROIHeads"),
    ],
)
def test_conversion_leaves_out_the_final_regression_layers_unless_keep_heads(cfg, detector, roi_heads):
    """AlignDet's extract_detector_weights.py drops fc_cls / fc_reg / retina_cls / retina_reg."""
    torch.manual_seed(0)
    state = build_model(tiny_cfg(cfg, detector, roi_heads)).state_dict()
    final = {
        k[len("online.") :]
        for k in state
        if k.startswith("online.") and k.endswith(("bbox_pred.weight", "bbox_pred.bias"))
    }
    assert final and all(is_final_regression(k) for k in final)
    stages = 3 if detector == "GeneralizedRCNN" and roi_heads == "CascadeROIHeads" else 1
    assert len(final) == 2 * stages  # weight and bias of every stage
    weights, report = box_domain_to_detector(state)
    assert not final & set(weights) and all(report.reinitialized[k] == FINAL_LAYER for k in final)
    kept, kept_report = box_domain_to_detector(state, keep_heads=True)
    assert set(kept) - set(weights) == final
    assert not any(why == FINAL_LAYER for why in kept_report.reinitialized.values())
    rpn = [k for k in weights if k.startswith("proposal_generator.")]
    assert detector == "RetinaNet" or any("anchor_deltas" in k for k in rpn)  # the whole RPN is kept


def _resolved(path):
    c = get_cfg()
    add_detpre_config(c)
    c.merge_from_file(str(CONFIGS / path))
    return c


R_CNN = ("faster_rcnn_R_50_FPN", "mask_rcnn_R_50_FPN")


@pytest.mark.parametrize("name", R_CNN)
def test_aligndet_rcnn_configs_resolve_to_the_official_model_and_samplers(name):
    pre, ft = _resolved(f"pretrain/{name}.yaml"), _resolved(f"finetune/{name}_1x.yaml")
    # selfsup_mask_rcnn_r50_fpn.py: RPN RandomSampler(4096, 1.0), RoI RandomSampler(4096, 1, neg_pos_ub=0).
    assert (pre.MODEL.RPN.BATCH_SIZE_PER_IMAGE, pre.MODEL.RPN.POSITIVE_FRACTION) == (4096, 1.0)
    box = pre.MODEL.BOX_DOMAIN
    assert (box.SAMPLES_PER_IMAGE, box.POSITIVE_FRACTION, box.BACKGROUND_NEGATIVES) == (4096, 1.0, False)
    assert (box.TEMPERATURE, box.BASE_MOMENTUM, box.END_MOMENTUM, box.EMBED_DIM) == (0.5, 0.996, 1.0, 256)
    assert box.FREEZE_BACKBONE and (pre.MODEL.RESNETS.NORM, pre.MODEL.FPN.NORM) == ("FrozenBN", "")
    assert pre.INPUT.TWO_VIEW.PHOTOMETRIC == "aligndet" and pre.INPUT.TWO_VIEW.MAX_PROPOSALS == 0
    assert pre.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800) and pre.INPUT.MAX_SIZE_TRAIN == 1333
    assert pre.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice" and pre.INPUT.RANDOM_FLIP == "horizontal"
    assert pre.SOLVER.BASE_LR == 0.02 and pre.SOLVER.IMS_PER_BATCH == 16
    # Shared4Conv1FCBBoxHead in both stages; SyncBN in backbone and FPN for fine-tuning.
    for c in (pre, ft):
        head = c.MODEL.ROI_BOX_HEAD
        assert (head.NAME, head.NUM_CONV, head.CONV_DIM, head.NUM_FC, head.FC_DIM, head.NORM) == (
            "FastRCNNConvFCHead",
            4,
            256,
            1,
            1024,
            "",
        )
    assert (ft.MODEL.RESNETS.NORM, ft.MODEL.FPN.NORM) == ("SyncBN", "SyncBN")
    assert (ft.SOLVER.BASE_LR, ft.SOLVER.WEIGHT_DECAY) == (0.03, 0.00005)


def test_aligndet_retinanet_and_cascade_configs_resolve_to_the_official_samplers():
    retina, retina_ft = _resolved("pretrain/retinanet_R_50_FPN.yaml"), _resolved("finetune/retinanet_R_50_FPN_1x.yaml")
    box = retina.MODEL.BOX_DOMAIN
    # selfsup_retinanet_r50_fpn.py: RandomSampler(2048, 1.0, neg_pos_ub=-1); SelectTopKProposals(50).
    assert (box.SAMPLES_PER_IMAGE, box.POSITIVE_FRACTION, box.BACKGROUND_NEGATIVES) == (2048, 1.0, True)
    assert retina.INPUT.TWO_VIEW.MAX_PROPOSALS == 50 and retina.INPUT.TWO_VIEW.PHOTOMETRIC == "aligndet"
    assert (retina.MODEL.RESNETS.NORM, retina.MODEL.FPN.NORM) == ("FrozenBN", "")
    assert (retina_ft.MODEL.RESNETS.NORM, retina_ft.MODEL.FPN.NORM) == ("SyncBN", "SyncBN")
    assert (retina.SOLVER.BASE_LR, retina_ft.SOLVER.BASE_LR, retina_ft.SOLVER.WEIGHT_DECAY) == (0.01, 0.015, 0.00005)
    # htc.py: stage weights 1 / 0.5 / 0.25, no refinement (interleaved), RoI 512 at 0.25, RPN 256 at 0.5, 2fc.
    cascade = _resolved("pretrain/cascade_mask_rcnn_R_50_FPN.yaml")
    box = cascade.MODEL.BOX_DOMAIN
    assert tuple(box.STAGE_WEIGHTS) == (1.0, 0.5, 0.25) and not box.REFINE_CASCADE_STAGES
    assert (box.SAMPLES_PER_IMAGE, box.POSITIVE_FRACTION, box.BACKGROUND_NEGATIVES) == (512, 0.25, True)
    assert (cascade.MODEL.RPN.BATCH_SIZE_PER_IMAGE, cascade.MODEL.RPN.POSITIVE_FRACTION) == (256, 0.5)
    for c in (cascade, _resolved("finetune/cascade_mask_rcnn_R_50_FPN_1x.yaml")):
        assert (c.MODEL.ROI_BOX_HEAD.NUM_CONV, c.MODEL.ROI_BOX_HEAD.NUM_FC) == (0, 2)
