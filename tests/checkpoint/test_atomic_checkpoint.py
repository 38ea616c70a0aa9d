"""Checkpoints are whole or absent, and resume skips a broken one (in-process, fast)."""

import os

import pytest
import torch
from torch import nn

from detpre.checkpoint.atomic import AtomicCheckpointer
from detpre.utils.file_io import atomic_write


class Counter:
    """A checkpointable, as Detectron2's trainer is."""

    def __init__(self, value=0):
        self.value = value

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def checkpointer(tmp_path, weight: float, counter: Counter):
    model = nn.Linear(2, 1)
    nn.init.constant_(model.weight, weight)
    return AtomicCheckpointer(model, str(tmp_path), trainer=counter), model


def test_a_failed_save_leaves_the_previous_checkpoint_named_and_whole(tmp_path, monkeypatch):
    ckpt, _ = checkpointer(tmp_path, 1.0, Counter(5))
    ckpt.save("model_0000005")

    def dies_half_way(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # a kill arriving mid-write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000011")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"
    assert not (tmp_path / "model_0000011.pth").exists()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000005.pth"]


def test_resume_names_the_broken_checkpoint_and_uses_the_previous_one(tmp_path, caplog):
    writer, _ = checkpointer(tmp_path, 1.0, Counter(5))
    writer.save("model_0000005")
    writer.checkpointables["trainer"].value = 11
    writer.save("model_0000011")
    broken = tmp_path / "model_0000011.pth"
    broken.write_bytes(broken.read_bytes()[:100])

    counter = Counter()
    reader, model = checkpointer(tmp_path, 0.0, counter)
    reader.resume_or_load("", resume=True)
    assert counter.value == 5
    assert torch.all(model.weight == 1.0)
    assert f"Cannot resume from {broken}" in caplog.text


def test_no_loadable_checkpoint_is_an_error_naming_them(tmp_path):
    writer, _ = checkpointer(tmp_path, 1.0, Counter(5))
    writer.save("model_0000005")
    (tmp_path / "model_0000005.pth").write_bytes(b"garbage")
    reader, _ = checkpointer(tmp_path, 0.0, Counter())
    with pytest.raises(RuntimeError, match="no loadable checkpoint.*model_0000005.pth"):
        reader.resume_or_load("", resume=True)


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_write(str(target)) as f:
            f.write("new")
            raise ValueError
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]
    with atomic_write(str(target)) as f:
        f.write("new")
    assert target.read_text() == "new"
