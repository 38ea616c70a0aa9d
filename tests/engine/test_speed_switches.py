"""The training-speed switches (issue 6): mixed precision, metric gathering, channels-last
memory and the compiled backbone. None may change what the model computes beyond its
precision; the CPU tests here check the wiring and the numerics, the GPU figures are in
BENCHMARKS.md (benchmarks/train_step.py)."""

import sys

import pytest
import torch
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from toy_configs import SMALL, drop_weights, load_config, toy_batch

from detpre.engine.defaults import ConfigError
from detpre.engine.train_loop import amp_precision, build_step_trainer
from detpre.engine.trainer import DetpreTrainer
from detpre.layers.norm import resolve_norms
from detpre.modeling.speed_switches import apply_execution_options, outermost_backbones

from conftest import DEMO_CONFIG, REPO, TINY_DEMO_OPTS

pytestmark = pytest.mark.usefixtures("one_thread")


def _demo_cfg(cfg, *opts):
    cfg.merge_from_file(str(DEMO_CONFIG))
    cfg.merge_from_list([*TINY_DEMO_OPTS, "MODEL.WEIGHTS", "", *opts])
    return cfg


@pytest.fixture
def capability(monkeypatch):
    """Pretend to be a CUDA GPU of a given compute capability."""

    def set_capability(major: int, minor: int = 0):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))

    return set_capability


@pytest.mark.parametrize(
    "enabled, precision, device, cap, expected",
    [
        (False, "auto", "cuda", (9, 0), None),
        (True, "auto", "cpu", (9, 0), None),
        (True, "auto", "cuda", (9, 0), torch.bfloat16),  # H100
        (True, "auto", "cuda", (8, 0), torch.bfloat16),  # A100
        (True, "auto", "cuda", (7, 0), torch.float16),  # V100: no bf16 tensor cores
        (True, "fp16", "cuda", (9, 0), torch.float16),
        (True, "bf16", "cuda:1", (9, 0), torch.bfloat16),
    ],
)
def test_amp_precision(cfg, capability, enabled, precision, device, cap, expected):
    capability(*cap)
    cfg.merge_from_list(["SOLVER.AMP.ENABLED", str(enabled), "SOLVER.AMP.PRECISION", precision, "MODEL.DEVICE", device])
    assert amp_precision(cfg) == expected


@pytest.mark.parametrize(
    "precision, device, message",
    [("fp8", "cuda", "'fp8' is not one of"), ("bf16", "cpu", "needs a CUDA device but MODEL.DEVICE is 'cpu'")],
)
def test_amp_precision_errors_name_the_key(cfg, precision, device, message):
    cfg.merge_from_list(["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", precision, "MODEL.DEVICE", device])
    with pytest.raises(ConfigError, match="SOLVER.AMP.PRECISION") as e:
        amp_precision(cfg)
    assert message in str(e.value)


def test_step_trainer_is_detectron2s_in_the_resolved_precision(cfg, capability):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg.merge_from_list(["SOLVER.AMP.ENABLED", "True", "SOLVER.GATHER_METRIC_PERIOD", "7"])

    cfg.MODEL.DEVICE = "cpu"
    plain = build_step_trainer(cfg, model, [], opt)
    assert type(plain) is SimpleTrainer and plain.gather_metric_period == 7

    cfg.MODEL.DEVICE = "cuda"
    capability(9, 0)
    bf16 = build_step_trainer(cfg, model, [], opt)
    assert isinstance(bf16, AMPTrainer) and bf16.precision == torch.bfloat16
    assert not bf16.grad_scaler.is_enabled()  # bf16 has fp32's range: no loss scaling
    assert bf16.gather_metric_period == 7

    capability(7, 0)
    fp16 = build_step_trainer(cfg, model, [], opt)
    assert isinstance(fp16, AMPTrainer) and fp16.precision == torch.float16
    assert fp16.grad_scaler._device == "cuda"  # enabled on a machine with CUDA

    cfg.SOLVER.GATHER_METRIC_PERIOD = 0
    with pytest.raises(ConfigError, match="SOLVER.GATHER_METRIC_PERIOD"):
        build_step_trainer(cfg, model, [], opt)


def test_gather_metric_period_in_a_training_run(cfg, demo_root, tmp_path):
    """DetpreTrainer gathers the losses every GATHER_METRIC_PERIOD iterations only."""
    _demo_cfg(cfg, "SOLVER.MAX_ITER", "6", "SOLVER.GATHER_METRIC_PERIOD", "3", "DATALOADER.NUM_WORKERS", "0")
    cfg.OUTPUT_DIR = str(tmp_path)
    trainer = DetpreTrainer(cfg)
    trainer.train()
    iterations = [it for _, it in trainer.storage.history("total_loss").values()]
    assert iterations == [2, 5]


# One config per detpre model family (scratch backbone, cascade and mask heads, two-stream
# fusion, SyncBN resolved to BN, box-domain two-stage and one-stage), all with AMP on.
AUTOCAST_CONFIGS = [
    "Demo/faster_rcnn_R18_FPN_scratch.yaml",
    "COCO-Scratch/cascade_mask_rcnn_R_50_FPN_6x_gn_scratch.yaml",
    "COCO-Scratch/mask_rcnn_R_50_FPN_6x_syncbn_scratch.yaml",
    "KAIST/faster_rcnn_R_50_FPN_halfway_fusion_gn_scratch.yaml",
    "AlignDet/Demo/pretrain_faster_rcnn_R18_FPN.yaml",
    "AlignDet/pretrain/retinanet_R_50_FPN.yaml",
]
# The same architectures made narrower and shallower: CPUs without bf16 instructions run bf16
# convolutions ~10x slower than fp32 (an R50 Cascade Mask R-CNN step took 40 s).
NARROW = [
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.FPN.OUT_CHANNELS",
    "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "128",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "64",
]


@pytest.mark.parametrize("name", AUTOCAST_CONFIGS)
def test_model_trains_under_bf16_autocast(name):
    """The training step under bf16 autocast, as AMPTrainer runs it on an A100/H100: the
    convolutions of detpre's modules run in bf16, every loss comes out finite and in fp32,
    close to full precision, and the gradients are fp32. (The CPU's autocast casts the same
    op classes as CUDA's, so a dtype mismatch in a detpre module fails here.)"""
    cfg = load_config(REPO / "configs" / name)
    assert cfg.SOLVER.AMP.ENABLED
    cfg.merge_from_list(SMALL + NARROW)
    drop_weights(cfg)
    cfg = resolve_norms(cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    stem_dtypes = []
    stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    stem.register_forward_hook(lambda module, inputs, output: stem_dtypes.append(output.dtype))
    losses = {}
    for amp in (False, True):
        torch.manual_seed(1)
        with EventStorage(0), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(toy_batch(cfg))
        model.zero_grad()
        sum(out.values()).backward()
        losses[amp] = {k: v.detach() for k, v in out.items()}
    assert stem_dtypes[0] == torch.float32 and stem_dtypes[-1] == torch.bfloat16
    assert set(losses[True]) == set(losses[False])
    for key, value in losses[True].items():
        assert torch.isfinite(value) and value.dtype == torch.float32, (key, value)
    # RPN losses depend on the anchors alone; later losses also on which proposals bf16's
    # rounding ranks first, so only their sum is compared, more loosely.
    for key in {"loss_rpn_cls", "loss_rpn_loc"} & set(losses[False]):
        assert float(losses[True][key]) == pytest.approx(float(losses[False][key]), rel=0.02), key
    total = {amp: float(sum(v.values())) for amp, v in losses.items()}
    assert total[True] == pytest.approx(total[False], rel=0.15)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def _train_losses(cfg, steps: int = 2):
    """Losses of ``steps`` SGD steps of the tiny demo detector, from seed 0, on a fixed batch."""
    torch.manual_seed(0)
    model = DetpreTrainer.build_model(cfg)
    model.train()
    batch = toy_batch(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    for step in range(steps):
        torch.manual_seed(step)
        with EventStorage(step):
            losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: float(v) for k, v in losses.items()})
    return model, history


def test_channels_last_changes_memory_not_results(cfg):
    eager, expected = _train_losses(_demo_cfg(cfg.clone()))
    fast, got = _train_losses(_demo_cfg(cfg.clone(), "MODEL.CHANNELS_LAST", "True"))
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not eager.backbone.bottom_up.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    # Checkpoints do not depend on the memory format: same keys, loadable both ways.
    assert list(fast.state_dict()) == list(eager.state_dict())
    eager.load_state_dict(fast.state_dict())
    assert torch.equal(eager.backbone.bottom_up.stem.conv1.weight, fast.backbone.bottom_up.stem.conv1.weight)


@pytest.mark.slow
def test_compiled_backbone_keeps_results_and_checkpoint_keys(cfg):
    """torch.compile through dynamo and AOTAutograd (the "aot_eager" backend: the graphs
    inductor would compile, run eagerly, so no C++ toolchain is needed)."""
    eager, expected = _train_losses(_demo_cfg(cfg.clone()))
    opts = ["MODEL.BACKBONE.COMPILE", "default", "MODEL.BACKBONE.COMPILE_BACKEND", "aot_eager"]
    compiled, got = _train_losses(_demo_cfg(cfg.clone(), *opts))
    assert compiled.backbone._compiled_call_impl is not None
    assert eager.backbone._compiled_call_impl is None
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_compile_finds_every_backbone_and_refuses_bad_modes(cfg):
    box_domain = load_config(REPO / "configs" / "AlignDet" / "Demo" / "pretrain_faster_rcnn_R18_FPN.yaml")
    box_domain.merge_from_list(SMALL)
    drop_weights(box_domain)
    model = build_model(box_domain)
    assert outermost_backbones(model) == [model.online.backbone, model.momentum.backbone]

    box_domain.MODEL.BACKBONE.COMPILE = "fastest"
    with pytest.raises(ValueError, match="MODEL.BACKBONE.COMPILE 'fastest' is not one of"):
        apply_execution_options(box_domain, model)
    box_domain.MODEL.BACKBONE.COMPILE = "default"
    with pytest.raises(ValueError, match="Linear has no detectron2 Backbone"):
        apply_execution_options(box_domain, torch.nn.Linear(1, 1))


def test_benchmark_clock_gathers_check_losses_then_times(cfg):
    """benchmarks/train_step.py's clock: every check iteration's loss gathered, then the
    run's own GATHER_METRIC_PERIOD, and a time for the timed iterations."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_step import repeat, time_steps

    _demo_cfg(cfg, "SOLVER.GATHER_METRIC_PERIOD", "5")
    model = DetpreTrainer.build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    trainer = build_step_trainer(cfg, model, repeat(toy_batch(cfg)), optimizer)
    measured = time_steps(trainer, iters=2, warmup=1, device="cpu", check=3)
    assert [it for _, it in trainer.storage.history("total_loss").values()] == [0, 1, 2, 4]
    assert measured.losses == [v for v, it in trainer.storage.history("total_loss").values()][:3]
    assert measured.seconds > 0 and measured.peak_mb > 0
    assert trainer.gather_metric_period == 5 and trainer.iter == 3 + 1 + 2 + 1
