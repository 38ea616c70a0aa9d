"""Long runs that survive: kill -9 at random moments, resume, and end where an
uninterrupted run ends; SIGTERM saves before exiting; broken checkpoints are skipped.

These run the real ``tools/train_net.py`` in subprocesses on the demo data, with a tiny
model, and compare final weights bit for bit (CPU training is deterministic here).
"""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import DEMO_CONFIG, REPO, TINY_DEMO_OPTS

pytestmark = pytest.mark.slow

MAX_ITER = 40
PERIOD = 6


def command(output_dir: Path, *flags: str, opts=()):
    return [
        sys.executable,
        str(REPO / "tools" / "train_net.py"),
        "--config-file",
        str(DEMO_CONFIG),
        *flags,
        *TINY_DEMO_OPTS,
        "SOLVER.MAX_ITER",
        str(MAX_ITER),
        "SOLVER.STEPS",
        "(20, 30)",
        "SOLVER.CHECKPOINT_PERIOD",
        str(PERIOD),
        "SOLVER.WARMUP_ITERS",
        "4",
        "TEST.EVAL_PERIOD",
        "0",
        "DATASETS.TEST",
        "()",
        "SEED",
        "7",
        "OUTPUT_DIR",
        str(output_dir),
        *opts,
    ]


def final_state(output_dir: Path):
    return torch.load(output_dir / "model_final.pth", map_location="cpu")


def assert_same_run(a, b):
    assert a["iteration"] == b["iteration"] == MAX_ITER - 1
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["trainer"]["hooks"]["LRScheduler"] == b["trainer"]["hooks"]["LRScheduler"]
    momentum = [s["momentum_buffer"] for s in a["trainer"]["_trainer"]["optimizer"]["state"].values()]
    resumed = [s["momentum_buffer"] for s in b["trainer"]["_trainer"]["optimizer"]["state"].values()]
    assert len(momentum) == len(resumed) > 0
    assert all(torch.equal(x, y) for x, y in zip(momentum, resumed))


def started_at(log: str) -> int:
    return int(re.findall(r"Starting training from iteration (\d+)", log)[-1])


@pytest.fixture(scope="module")
def uninterrupted(demo_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(command(out), env=demo_env, check=True, capture_output=True, timeout=600)
    return final_state(out)


def test_kill_at_random_moments_and_resume(demo_env, uninterrupted, tmp_path):
    rng = random.Random(2026)
    kills = 0
    expected_start = 0
    while kills < 3:
        log = tmp_path / f"run{kills}.log"
        with open(log, "w") as err:
            proc = subprocess.Popen(command(tmp_path, "--resume"), env=demo_env, stdout=err, stderr=subprocess.STDOUT)
            # Kill at a random instant once this run has trained a little (its first
            # checkpoint exists): it may fall in the middle of writing the next one.
            marker = tmp_path / "last_checkpoint"
            before = marker.stat().st_mtime if marker.exists() else 0
            while proc.poll() is None and (not marker.exists() or marker.stat().st_mtime == before):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
            if proc.poll() is not None:
                break  # finished before the kill: nothing left to interrupt
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        kills += 1
        # Nothing is lost but the iterations since the last checkpoint.
        assert started_at(log.read_text()) == expected_start
        saved = torch.load(tmp_path / (tmp_path / "last_checkpoint").read_text(), map_location="cpu")
        assert saved["iteration"] % PERIOD == PERIOD - 1 or saved["iteration"] == MAX_ITER - 1
        expected_start = saved["iteration"] + 1
    assert kills >= 1
    done = subprocess.run(
        command(tmp_path, "--resume"),
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert_same_run(final_state(tmp_path), uninterrupted)


def test_sigterm_saves_a_checkpoint_and_resume_finishes(demo_env, uninterrupted, tmp_path):
    proc = subprocess.Popen(
        command(tmp_path), env=demo_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while not (tmp_path / "last_checkpoint").exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    err, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped = int(re.search(r"Stopped at iteration (\d+)", err).group(1))
    saved = torch.load(tmp_path / (tmp_path / "last_checkpoint").read_text(), map_location="cpu")
    assert saved["iteration"] == stopped
    done = subprocess.run(
        command(tmp_path, "--resume"),
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert started_at(done.stdout) == stopped + 1
    assert_same_run(final_state(tmp_path), uninterrupted)


def test_truncated_checkpoint_is_named_and_the_previous_one_used(demo_env, uninterrupted, tmp_path):
    first = subprocess.run(
        command(tmp_path, opts=("SOLVER.MAX_ITER", str(3 * PERIOD))),
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stdout[-3000:]
    last = tmp_path / (tmp_path / "last_checkpoint").read_text()
    last.write_bytes(last.read_bytes()[:1000])  # a disk that filled up mid-write
    done = subprocess.run(
        command(tmp_path, "--resume"),
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"Cannot resume from {last}" in done.stdout
    # model_final.pth (iteration 17) is broken; model_0000017.pth holds the same state.
    assert started_at(done.stdout) == 3 * PERIOD
    assert_same_run(final_state(tmp_path), uninterrupted)


def test_divergence_names_iteration_losses_and_last_checkpoint(demo_env, tmp_path):
    run = subprocess.run(
        command(tmp_path, opts=("SOLVER.BASE_LR", "1e6", "SOLVER.CHECKPOINT_PERIOD", "1")),
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert run.returncode != 0
    diverged = re.search(r"Training diverged at iteration (\d+)\. Last good checkpoint: (\S+)\.", run.stdout)
    assert diverged, run.stdout[-3000:]
    iteration, checkpoint = int(diverged.group(1)), diverged.group(2)
    assert "loss_dict" in run.stdout and "loss_cls" in run.stdout
    assert checkpoint.endswith(f"model_{iteration - 1:07d}.pth") and os.path.isfile(checkpoint)


def test_log_txt_holds_the_resume_past_a_broken_checkpoint_and_the_sigint_stop(demo_env, tmp_path):
    """Every detpre message reaches OUTPUT_DIR/log.txt, formatted, once."""
    first = subprocess.run(
        command(tmp_path, opts=("SOLVER.MAX_ITER", str(2 * PERIOD))),
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stdout[-3000:]
    last = tmp_path / (tmp_path / "last_checkpoint").read_text()
    last.write_bytes(last.read_bytes()[:1000])
    (tmp_path / "log.txt").unlink()
    # Two loader workers: Ctrl-C reaches their process group too, and only the trainer must react.
    proc = subprocess.Popen(
        command(tmp_path, "--resume", opts=("DATALOADER.NUM_WORKERS", "2")),
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    log = tmp_path / "log.txt"
    while not (log.exists() and "Starting training from iteration" in log.read_text()):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, out[-3000:]
    text = log.read_text()
    assert re.search(rf"\] detpre\.checkpoint\.atomic ERROR: Cannot resume from {re.escape(str(last))} ", text)
    assert text.count("Received SIGINT: saving a checkpoint after this step.") == 1
    assert re.search(r"\] detpre\.engine\.hooks WARNING: Stopped at iteration \d+; resume with --resume\.", text)
    assert "Loaded" in text and "of the model's" in text  # the checkpointer's load summary
    assert f"Full log: {log}" in text
