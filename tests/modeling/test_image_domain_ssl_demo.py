"""benchmarks/image_domain_ssl_demo.py, the toy-scale evidence of image-domain pre-training,
run end to end at a few iterations on 8-image subsets of the session's demo data: pre-training,
conversion, the three fine-tuning arms with their COCO AP, the two linear probes, the table.

The experiment itself (5 seeds, numbers in README / BENCHMARKS.md) is too long for the suite.
"""

import json

import pytest
import torch

from conftest import load_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PRETRAIN_OPTS = ["SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_ITER", "2"]
FINETUNE_OPTS = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.STEPS",
    "(1,)",
    "SOLVER.WARMUP_ITERS",
    "1",
]


@pytest.fixture(scope="module")
def script():
    return load_benchmark("image_domain_ssl_demo")


def test_the_experiment_script_runs_every_arm_and_reports_them(script, demo_root, tmp_path, capsys):
    threads = torch.get_num_threads()
    argv = ["--seeds", "0", "--output-dir", str(tmp_path), "--unlabeled", "detpre_demo_train_16_s1"]
    argv += ["--labeled", "detpre_demo_train_8_s0", "--val", "detpre_demo_val_16_s0"]
    argv += ["--pretrain-opts", *PRETRAIN_OPTS, "--finetune-opts", *FINETUNE_OPTS]
    try:
        assert script.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.load(open(tmp_path / "results.json"))
    row = results["seeds"]["0"]
    assert row["pretrain"]["iters"] == 2 and "image_domain/global_embedding_spread" in row["pretrain"]["last"]
    assert row["pretrained"]["iters"] == row["random"]["iters"] == 2
    assert row["matched"]["iters"] == 2 + results["compute_matching"]["extra_iters"]
    assert all(0 <= row[arm]["AP"] <= 100 for arm in ("pretrained", "random", "matched"))
    assert set(row["probe_pretrained"]) == set(row["probe_random"]) == {"res4", "res5"}
    # What arm (a) starts from: the query encoder under the detector's names.
    weights = torch.load(row["pretrain"]["backbone"], map_location="cpu")["model"]
    assert weights and all(k.startswith("backbone.bottom_up.") for k in weights)
    printed = capsys.readouterr().out
    assert "| AP (a) - (b) |" in printed and "| probe top-1 %, res5, random init |" in printed
    # A second run reads every finished arm back instead of training it again.
    assert script.main(argv) == 0
    assert json.load(open(tmp_path / "results.json"))["seeds"]["0"] == row


def test_the_stretched_schedule_drops_the_lr_at_the_same_fractions(script, cfg):
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 120, (90, 110)
    assert script.stretched_schedule(cfg, 248) == ["SOLVER.MAX_ITER", "248", "SOLVER.STEPS", "(186, 227)"]
