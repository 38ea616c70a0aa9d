"""TEST.PRECISE_BN in DetpreTrainer, end to end at toy scale: the demo detector with SyncBN
(BN in one process), its statistics recomputed from the training loader's own batches, and a
resumed run that ends with the same BN buffers as the uninterrupted one."""

import itertools
import random
import shutil

import detectron2.engine.hooks as d2_hooks
import numpy as np
import pytest
import torch

from detpre.engine.hooks import ResumablePreciseBN
from detpre.engine.trainer import DetpreTrainer

from conftest import DEMO_CONFIG, TINY_DEMO_OPTS

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_ITER = 2
PRECISE_BN_OPTS = [
    "MODEL.RESNETS.NORM",
    "SyncBN",
    "MODEL.FPN.NORM",
    "SyncBN",
    "TEST.PRECISE_BN.ENABLED",
    "True",
    "TEST.PRECISE_BN.NUM_ITER",
    str(NUM_ITER),
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.STEPS",
    "(3,)",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "TEST.EVAL_PERIOD",
    "2",
    "DATASETS.TEST",
    "()",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SEED",
    "3",
]


@pytest.fixture
def make_trainer(cfg, demo_root):
    def make(output_dir, *opts):
        c = cfg.clone()
        c.merge_from_file(str(DEMO_CONFIG))
        c.merge_from_list([*TINY_DEMO_OPTS, *PRECISE_BN_OPTS, *opts])
        c.OUTPUT_DIR = str(output_dir)
        return DetpreTrainer(c)

    return make


@pytest.fixture
def replayed(monkeypatch):
    """The image ids of every batch each precise-BN update ran on, one list per update."""
    updates = []
    original = d2_hooks.update_bn_stats

    def recording(model, batches, num_iter):
        seen = []
        updates.append(seen)

        def record():
            for batch in batches:
                seen.append([d["image_id"] for d in batch])
                yield batch

        return original(model, record(), num_iter)

    monkeypatch.setattr(d2_hooks, "update_bn_stats", recording)
    return updates


def training_batches(trainer, start, n):
    """Image ids of training batches ``start`` .. ``start + n - 1``, from the loader's plan."""
    loader = trainer._trainer.data_loader
    return [[loader.dataset[i]["image_id"] for i in b] for b in itertools.islice(loader.plan.batches(start), n)]


def test_resumed_run_ends_with_the_same_bn_statistics(make_trainer, replayed, tmp_path):
    full = make_trainer(tmp_path / "full")
    names = [type(h).__name__ for h in full._hooks]
    # Where Detectron2 puts its PreciseBN: before the checkpointer that saves its statistics.
    assert names.index("LRScheduler") < names.index("ResumablePreciseBN") < names.index("PeriodicCheckpointer")
    assert "PreciseBN" not in names and any(isinstance(m, torch.nn.BatchNorm2d) for m in full.model.modules())
    full.train()
    # At the period (after iteration 1) and at the end (iteration 3), on the batches just trained on.
    assert replayed == [training_batches(full, 0, NUM_ITER), training_batches(full, 2, NUM_ITER)]

    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(tmp_path / "full" / "model_0000001.pth", part)
    (part / "last_checkpoint").write_text("model_0000001.pth")
    resumed = make_trainer(part)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    assert replayed[2] == replayed[1]  # Detectron2's hook would start its own stream again: batches 0, 1

    a = torch.load(tmp_path / "full" / "model_final.pth", map_location="cpu")["model"]
    b = torch.load(part / "model_final.pth", map_location="cpu")["model"]
    assert any("running_var" in k for k in a) and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_an_update_leaves_the_training_stream_and_the_rngs_alone(make_trainer, replayed, tmp_path):
    trainer = make_trainer(tmp_path)
    hook = next(h for h in trainer._hooks if isinstance(h, ResumablePreciseBN))
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_var.clone()

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    for seed in (random.seed, np.random.seed, torch.manual_seed):
        seed(11)
    expected = draws()
    for seed in (random.seed, np.random.seed, torch.manual_seed):
        seed(11)
    trainer.iter = 6
    hook.update_stats()
    assert draws() == expected
    assert replayed == [training_batches(trainer, 5, NUM_ITER)]
    assert trainer._trainer.data_loader.start_iter == 0
    assert not torch.equal(bn.running_var, before)  # the statistics were set


def test_gn_models_get_no_precise_bn_hook(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN")
    assert not any(isinstance(h, d2_hooks.PreciseBN) for h in trainer._hooks)
