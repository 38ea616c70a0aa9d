"""ImageDomainPretrainer: MoCo v2 / DenseCL steps, the key encoder's EMA, queues (saved and
restored), DenseCL's matching, cross-modal views, and conversion to backbone weights."""

import copy
import io
import logging

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.modeling import build_model
from detectron2.utils import logger as d2_logger
from detectron2.utils.events import EventStorage
from toy_configs import train_step

from detpre import add_detpre_config
from detpre.checkpoint import DetpreCheckpointer
from detpre.modeling.backbone.fusion import HalfwayFusionResNet
from detpre.modeling.meta_arch import ImageDomainPretrainer
from detpre.modeling.meta_arch.image_domain_contrast import KeyQueue, match_locations, queue_info_nce
from detpre.modeling.meta_arch.image_domain_pretrainer import per_process_batch_norms
from detpre.modeling.meta_arch.image_domain_weights import image_domain_to_backbone
from detpre.modeling.meta_arch.pretrained_weights import input_weights_key

from conftest import REPO, load_tool

pytestmark = pytest.mark.usefixtures("one_thread")

DEMO = REPO / "configs" / "Demo"
KAIST = REPO / "configs" / "KAIST"
BATCH, SIZE, QUEUE = 4, 64, 8


def ssl_cfg(path=DEMO / "image_domain_mocov2_R18_FPN.yaml", **model_keys):
    """A pre-training config at toy scale: small heads and queue, a batch of 4."""
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.IMAGE_DOMAIN.EMBED_DIM = 16
    cfg.MODEL.IMAGE_DOMAIN.HIDDEN_DIM = 32
    cfg.MODEL.IMAGE_DOMAIN.QUEUE_SIZE = QUEUE
    cfg.SOLVER.IMS_PER_BATCH = BATCH
    for key, value in model_keys.items():
        setattr(cfg.MODEL.IMAGE_DOMAIN, key, value)
    return cfg


def tiny_kaist(cfg, backbone="build_scratch_resnet_fpn_backbone"):
    """The KAIST cross-modal config with an R18: BGRT, visible then thermal view."""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.BACKBONE.NAME = backbone
    return cfg


def batch(seed=0, channels=3, modalities=(None, None)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(BATCH):
        views = []
        for modality in modalities:
            image = torch.randint(0, 256, (channels, SIZE, SIZE), dtype=torch.uint8, generator=g)
            views.append({"image": image, "modality": modality})
        out.append({"views": views})
    return out


def sgd(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)


@pytest.mark.parametrize(
    "method, losses",
    [("moco_v2", {"loss_global_contrast"}), ("densecl", {"loss_global_contrast", "loss_dense_contrast"})],
)
def test_a_step_trains_the_query_encoder_and_logs_health(method, losses):
    torch.manual_seed(0)
    model = build_model(ssl_cfg(METHOD=method, QUEUE_START="random"))  # MoCo's: negatives from step 0
    assert isinstance(model, ImageDomainPretrainer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with EventStorage() as storage:
        out = train_step(model, sgd(model), batch())
    assert set(out) == losses and all(torch.isfinite(v) for v in out.values())
    logged = storage.latest()
    heads = ["global", "dense"] if method == "densecl" else ["global"]
    for head in heads:
        for name in ("positive_cosine", "negative_cosine", "top1", "embedding_spread"):
            assert f"image_domain/{head}_{name}" in logged, (head, name)
    assert logged["image_domain/queue_fill"][0] == pytest.approx(BATCH / QUEUE)
    assert logged["image_domain/momentum"][0] == 0.99  # the demo config's
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("encoder_q.backbone.bottom_up.res5") for k in changed)
    assert any(k.startswith("encoder_q.global_head") for k in changed)
    assert not any(k.startswith("encoder_k.") for k in changed)  # a copy at step 0; the EMA comes next step
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert int(model.steps) == 1
    # The FPN is not pre-trained here: only the bottom-up network is in the encoder.
    assert not any("fpn_" in k for k in after)


def test_a_queue_that_starts_empty_has_only_past_keys_as_negatives():
    torch.manual_seed(0)
    model = build_model(ssl_cfg(QUEUE_START="empty"))
    optimizer = sgd(model)
    with EventStorage() as storage:
        first = train_step(model, optimizer, batch(0))
        assert first["loss_global_contrast"].item() == 0.0  # one logit, the positive: nothing to contrast
        assert "image_domain/global_negative_cosine" not in storage.latest()
        storage.step()
        assert model.queues["global"].negatives().shape == (BATCH, 16)  # the first batch's keys
        second = train_step(model, optimizer, batch(1))
    assert second["loss_global_contrast"].item() > 0 and "image_domain/global_negative_cosine" in storage.latest()
    with pytest.raises(ValueError, match="QUEUE_START"):
        build_model(ssl_cfg(QUEUE_START="zeros"))


def test_the_key_encoder_is_an_ema_of_the_query_parameters_only():
    torch.manual_seed(0)
    cfg = ssl_cfg(MOMENTUM=0.9)
    cfg.MODEL.RESNETS.NORM = "BN"  # buffers of its own: BN statistics
    model = build_model(cfg)
    optimizer = sgd(model)
    query, key = dict(model.encoder_q.named_parameters()), dict(model.encoder_k.named_parameters())
    name = "backbone.bottom_up.res4.0.conv1.weight"
    with EventStorage() as storage:
        train_step(model, optimizer, batch(0))
        storage.step()
        q, k = query[name].detach().clone(), key[name].detach().clone()
        train_step(model, optimizer, batch(1))
    torch.testing.assert_close(key[name], 0.9 * k + 0.1 * q)
    stats = "backbone.bottom_up.res4.0.conv1.norm.running_mean"
    q_stats, k_stats = dict(model.encoder_q.named_buffers())[stats], dict(model.encoder_k.named_buffers())[stats]
    # The key encoder's statistics are its own forward passes' (MoCo), not an EMA of the query's.
    assert not torch.allclose(q_stats, k_stats) and k_stats.abs().sum() > 0


def test_keys_enter_the_queue_after_the_loss_and_the_queue_wraps():
    torch.manual_seed(0)
    model = build_model(ssl_cfg(METHOD="densecl"))
    optimizer = sgd(model)
    inputs = batch(0)
    with torch.no_grad():
        keys = model.encoder_k(*model._views(inputs)[1])
    with EventStorage():
        train_step(model, optimizer, inputs)
    queue, dense = model.queues["global"], model.queues["dense"]
    torch.testing.assert_close(queue.keys[:BATCH], keys.embedding)
    torch.testing.assert_close(dense.keys[:BATCH], keys.dense_pooled)  # DenseCL: the pooled dense key
    torch.testing.assert_close(keys.dense_pooled, F.normalize(keys.dense.mean(2), dim=1), atol=0.2, rtol=0)
    assert (int(queue.ptr), int(queue.filled)) == (BATCH, BATCH)
    with EventStorage():
        train_step(model, optimizer, batch(1))
    assert (int(queue.ptr), int(queue.filled), queue.fill) == (0, QUEUE, 1.0)
    with pytest.raises(ValueError, match="multiple of the global batch"):
        KeyQueue(8, 4).enqueue(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="QUEUE_SIZE.*IMS_PER_BATCH"):
        cfg = ssl_cfg()
        cfg.SOLVER.IMS_PER_BATCH = 3
        build_model(cfg)


def test_info_nce_is_cross_entropy_with_label_zero_over_positive_and_queue():
    g = torch.Generator().manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, 8, generator=g), dim=1) for n in (5, 5, 12))
    loss, stats = queue_info_nce(q, k, queue, 0.2)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.2
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.zeros(5, dtype=torch.long)))
    assert stats["top1"] == (logits.argmax(1) == 0).float().mean()
    loss_same, stats_same = queue_info_nce(q, q, queue, 0.2)
    assert stats_same["positive_cosine"] == pytest.approx(1.0) and loss_same < loss


def test_the_queue_and_step_count_are_saved_so_a_resumed_run_continues_exactly():
    torch.manual_seed(0)
    cfg = ssl_cfg(METHOD="densecl")
    model = build_model(cfg)
    optimizer = sgd(model)
    with EventStorage() as storage:
        for i in range(2):
            train_step(model, optimizer, batch(i))
            storage.step()
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    keys = set(model.state_dict())
    assert {"steps", "queues.global.keys", "queues.global.ptr", "queues.dense.filled"} <= keys
    torch.manual_seed(1)  # another init: only the checkpoint can make it the same run
    resumed = build_model(cfg)
    resumed_optimizer = sgd(resumed)
    saved.seek(0)
    state = torch.load(saved)
    resumed.load_state_dict(state["model"])
    resumed_optimizer.load_state_dict(state["optimizer"])
    with EventStorage(2):
        a = train_step(model, optimizer, batch(2))
        b = train_step(resumed, resumed_optimizer, batch(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name, value in model.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_dense_matching_finds_the_location_of_the_most_similar_backbone_feature():
    g = torch.Generator().manual_seed(0)
    query = torch.randn(2, 32, 9, generator=g)
    order = torch.stack([torch.randperm(9, generator=g) for _ in range(2)])
    key = torch.stack([query[i][:, order[i]] for i in range(2)]) * 3.0  # scale does not matter: cosine
    match = match_locations(query, key)
    # key location order[i][j] holds query location j: query j's match is where order[i] == j.
    assert torch.equal(torch.gather(order, 1, match), torch.arange(9).expand(2, 9))


def test_cross_modal_views_queues_and_blanked_channels(cfg):
    torch.manual_seed(0)
    ssl = tiny_kaist(ssl_cfg(KAIST / "image_domain_crossmodal_mocov2_R_50_FPN_early_fusion_gn.yaml", METHOD="densecl"))
    model = build_model(ssl)
    assert set(model.queues) == {"global_visible", "global_lwir", "dense_visible", "dense_lwir"}
    inputs = batch(0, channels=4, modalities=("visible", "lwir"))
    (visible, shown_v), (thermal, shown_t) = model._views(inputs)
    assert (shown_v, shown_t) == ("visible", "lwir")
    assert visible[:, 3].abs().sum() == 0 and visible[:, :3].abs().sum() > 0  # thermal channels at the mean
    assert thermal[:, :3].abs().sum() == 0 and thermal[:, 3].abs().sum() > 0
    with torch.no_grad():
        keys_visible = model.encoder_k(visible, "visible").embedding
        keys_thermal = model.encoder_k(thermal, "lwir").embedding
    with EventStorage():
        losses = train_step(model, sgd(model), inputs)
    assert set(losses) == {"loss_global_contrast", "loss_dense_contrast"}
    torch.testing.assert_close(model.queues["global_visible"].keys[:BATCH], keys_visible)
    torch.testing.assert_close(model.queues["global_lwir"].keys[:BATCH], keys_thermal)
    with pytest.raises(ValueError, match="CROSS_MODAL"), EventStorage():
        model(batch(0, channels=4))  # views of every channel: the mapper read another config
    with pytest.raises(ValueError, match="no thermal"):
        build_model(ssl_cfg(METHOD="moco_v2", CROSS_MODAL=True))  # the demo's BGR


def test_halfway_fusion_shows_each_frame_through_its_own_stream():
    torch.manual_seed(0)
    ssl = tiny_kaist(
        ssl_cfg(KAIST / "image_domain_crossmodal_mocov2_R_50_FPN_halfway_fusion_gn.yaml"),
        "build_halfway_fusion_resnet_fpn_backbone",
    )
    model = build_model(ssl)
    network = model.encoder_q.network
    assert isinstance(network, HalfwayFusionResNet)
    # The res2 fusion conv only feeds the FPN: no image-domain loss reaches it, so it is frozen.
    assert not any(p.requires_grad for p in network.fuse["res2"].parameters())
    assert all(p.requires_grad for p in network.fuse["res3"].parameters())
    calls = []
    network.thermal.stem.register_forward_hook(lambda *_: calls.append("thermal"))
    x = torch.randn(2, 4, SIZE, SIZE)
    other = x.clone()
    other[:, 3] = torch.randn(2, SIZE, SIZE)
    with torch.no_grad():
        alone = network(x, modality="visible")["res5"]
        assert torch.equal(alone, network(other, modality="visible")["res5"]) and not calls
        both = network(x)["res5"]
    assert calls == ["thermal"] and not torch.allclose(alone, both)
    with EventStorage():
        train_step(model, sgd(model), batch(0, channels=4, modalities=("visible", "lwir")))
    grads = {n: p.grad for n, p in network.named_parameters() if p.requires_grad}
    assert grads["visible.stem.conv1.weight"] is not None and grads["thermal.stem.conv1.weight"] is not None


def test_converted_weights_load_into_the_fine_tuning_config_with_every_backbone_tensor(tmp_path):
    torch.manual_seed(0)
    model = build_model(ssl_cfg())
    with EventStorage():
        train_step(model, sgd(model), batch())
    finetune_cfg = get_cfg()
    add_detpre_config(finetune_cfg)
    finetune_cfg.merge_from_file(str(DEMO / "faster_rcnn_R18_FPN_mocov2.yaml"))
    finetune_cfg.MODEL.DEVICE, finetune_cfg.MODEL.WEIGHTS = "cpu", ""
    detector = build_model(finetune_cfg)
    weights, report = image_domain_to_backbone(model.state_dict(), detector.state_dict())
    assert not report.mismatched and "backbone.fpn_lateral2.weight" in report.reinitialized
    assert {"steps", "queues.global.keys"} <= set(report.dropped)
    assert any(k.startswith("encoder_k.") for k in report.dropped) and "kept" in report.summary()
    path = tmp_path / "backbone.pth"
    torch.save({"model": weights}, path)
    checkpointer = DetpreCheckpointer(detector)
    checkpointer.load(str(path))
    bottom_up = [k for k in detector.state_dict() if k.startswith("backbone.bottom_up.")]
    assert bottom_up and not set(checkpointer.load_report.unloaded()) & set(bottom_up)
    query = model.encoder_q.state_dict()
    for key in bottom_up:
        assert torch.equal(detector.state_dict()[key], query[key]), key
    with pytest.raises(ValueError, match="ImageDomainPretrainer"):
        image_domain_to_backbone(detector.state_dict())


def test_convert_pretrained_writes_backbone_weights_for_fine_tuning_and_box_domain(tmp_path, capsys):
    """tools/convert_pretrained.py on an image-domain checkpoint: the fine-tuning config of the
    chain, the box-domain pre-training config (its image-domain stage), and a refusal."""
    main = load_tool("convert_pretrained").main
    torch.manual_seed(0)
    checkpoint = tmp_path / "model_final.pth"
    torch.save({"model": build_model(ssl_cfg()).state_dict()}, checkpoint)
    out = tmp_path / "backbone.pth"
    finetune = str(DEMO / "faster_rcnn_R18_FPN_mocov2.yaml")
    assert main([str(checkpoint), str(out), "--config-file", finetune, "--report", str(tmp_path / "r.json")]) == 0
    assert "backbone tensors of the query encoder" in capsys.readouterr().out
    weights = torch.load(out)["model"]
    assert all(k.startswith("backbone.bottom_up.") for k in weights)
    box_domain = str(DEMO / "aligndet_pretrain_faster_rcnn_R18_FPN_mocov2.yaml")
    assert main([str(checkpoint), str(tmp_path / "b.pth"), "--config-file", box_domain]) == 0
    assert main([str(checkpoint), str(tmp_path / "c.pth"), "--config-file", finetune, "MODEL.RESNETS.DEPTH", "34"]) == 2
    assert "describe different models" in capsys.readouterr().err and not (tmp_path / "c.pth").exists()
    ssl_config = str(DEMO / "image_domain_mocov2_R18_FPN.yaml")
    assert main([str(checkpoint), str(tmp_path / "d.pth"), "--config-file", ssl_config]) == 2
    assert "pre-training config" in capsys.readouterr().err
    assert main([str(checkpoint), str(tmp_path / "e.pth"), "--keep-heads"]) == 2  # a backbone has no heads
    assert "--keep-heads" in capsys.readouterr().err and not (tmp_path / "e.pth").exists()


@pytest.mark.parametrize(
    "config, key",
    [
        ("image_domain_mocov2_R18_FPN.yaml", "MODEL.WEIGHTS"),
        ("aligndet_pretrain_faster_rcnn_R18_FPN_mocov2.yaml", "MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS"),
        ("faster_rcnn_R18_FPN_mocov2.yaml", "MODEL.WEIGHTS"),
    ],
)
def test_each_stage_of_the_chain_takes_the_previous_ones_weights_through_its_key(config, key):
    """The key the init study hands a converted stage's weights to: the box-domain stage's
    wrapped detector takes the image-domain backbone, every other model MODEL.WEIGHTS."""
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(str(DEMO / config))
    assert input_weights_key(cfg) == key


def test_box_domain_pretraining_takes_the_converted_backbone_as_its_image_domain_stage(tmp_path):
    torch.manual_seed(0)
    ssl = build_model(ssl_cfg())
    weights, _ = image_domain_to_backbone(ssl.state_dict())
    torch.save({"model": weights}, tmp_path / "backbone.pth")
    box_cfg = get_cfg()
    add_detpre_config(box_cfg)
    box_cfg.merge_from_file(str(DEMO / "aligndet_pretrain_faster_rcnn_R18_FPN_mocov2.yaml"))
    box_cfg.MODEL.DEVICE = "cpu"
    box_cfg.MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS = str(tmp_path / "backbone.pth")
    torch.manual_seed(1)
    box_domain = build_model(box_cfg)
    for key, value in weights.items():
        assert torch.equal(box_domain.online.state_dict()[key], value), key
        assert torch.equal(box_domain.momentum.state_dict()[key], value), key
    assert box_domain.freeze_backbone  # AlignDet's default once the backbone is pre-trained


def test_collapsed_embeddings_are_warned_about(caplog, monkeypatch):
    monkeypatch.setattr(d2_logger, "_LOG_TIMER", {})  # earlier tests' warnings do not silence this one
    model = build_model(ssl_cfg())
    torch.nn.init.zeros_(model.encoder_q.global_head[2].weight)  # every image embeds to the same vector
    torch.nn.init.ones_(model.encoder_q.global_head[2].bias)
    with EventStorage(5) as storage, caplog.at_level(logging.WARNING):
        model(batch())
    assert storage.latest()["image_domain/global_embedding_spread"][0] < 1e-3
    assert any("collapsing at iteration 5" in r.getMessage() for r in caplog.records)


def test_mixed_precision_keeps_the_logits_in_full_precision():
    torch.manual_seed(0)
    model = build_model(ssl_cfg(METHOD="densecl"))
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(batch())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert model.queues["global"].keys.dtype == torch.float32


def test_inference_embeds_images_and_bad_inputs_are_named():
    model = build_model(ssl_cfg()).eval()
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)}] * 2)
    assert len(out) == 2 and out[0]["embedding"].shape == (16,)
    model.train()
    with pytest.raises(ValueError, match="TwoCropDatasetMapper"), EventStorage():
        model([{"image": torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)}])
    mixed = batch()
    mixed[0]["views"][0]["image"] = torch.zeros(3, SIZE // 2, SIZE // 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="one size"), EventStorage():
        model(mixed)
    with pytest.raises(ValueError, match="METHOD"):
        build_model(ssl_cfg(METHOD="simclr"))


def test_key_encoder_syncbn_becomes_per_process_with_the_same_state():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), NaiveSyncBatchNorm(4), torch.nn.SyncBatchNorm(4))
    module[1].running_mean.fill_(0.5)
    module[2].weight.requires_grad_(False)  # a key encoder's: never trained
    state = copy.deepcopy(module.state_dict())
    assert per_process_batch_norms(module) == 2
    assert all(type(m) is torch.nn.BatchNorm2d for m in module[1:])
    assert module[1].weight.requires_grad and not module[2].weight.requires_grad
    assert (
        all(torch.equal(state[k], v) for k, v in module.state_dict().items())
        and state.keys() == module.state_dict().keys()
    )


CHAIN = sorted(
    [*KAIST.glob("image_domain_*.yaml"), *KAIST.glob("*_mocov2*.yaml"), *DEMO.glob("image_domain_*.yaml")]
    + [*DEMO.glob("*_mocov2.yaml")]
)


@pytest.mark.parametrize("path", CHAIN, ids=[p.name for p in CHAIN])
def test_the_chains_configs_load_as_the_tools_load_them(path):
    """Through detpre's loader (what tools/train_net.py does), also with another named schedule:
    test_configs merges files directly, which does not check a file's values against its schedule."""
    from detpre.config import load_cfg

    cfg = load_cfg(str(path), ["MODEL.DEVICE", "cpu"])
    if cfg.SOLVER.SCHEDULE.NAME:
        assert load_cfg(str(path), ["MODEL.DEVICE", "cpu"], schedule="2x").SOLVER.MAX_ITER == 2 * cfg.SOLVER.MAX_ITER
    if cfg.MODEL.META_ARCHITECTURE == "ImageDomainPretrainer":
        assert cfg.INPUT.DATASET_MAPPER_NAME == "TwoCropDatasetMapper" and not cfg.DATASETS.TEST
        assert not cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS and cfg.MODEL.IMAGE_DOMAIN.QUEUE_START == "empty"


@pytest.mark.parametrize(
    "path", [DEMO / "image_domain_mocov2_R18_FPN.yaml", DEMO / "aligndet_pretrain_faster_rcnn_R18_FPN_mocov2.yaml"]
)
def test_pretraining_refuses_precise_bn_whose_forward_would_move_the_momentum_encoder(path):
    cfg = ssl_cfg(path)
    cfg.MODEL.BOX_DOMAIN.DETECTOR_WEIGHTS = ""
    cfg.TEST.PRECISE_BN.ENABLED = True
    with pytest.raises(ValueError, match="TEST.PRECISE_BN.ENABLED is True, but .*Pretrainer's training forward"):
        build_model(cfg)
    cfg.TEST.PRECISE_BN.ENABLED = False
    assert build_model(cfg) is not None
