"""Every write is checked: a full disk, a read-only or a missing folder is one ``error:`` line
naming the path (exit status 1), nothing already written is lost, nothing is left half-written;
new files get the permissions the umask gives, as an ordinary write would."""

import importlib.util
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from detpre.utils.file_io import WriteError, atomic_write

from conftest import DEMO_CONFIG, REPO, TINY_DEMO_OPTS


def limited(max_bytes: int):
    """A ``preexec_fn`` under which no file may grow past ``max_bytes``: writes beyond it fail
    with EFBIG, as they fail with ENOSPC on a full disk."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leftovers(folder: Path):
    return sorted(p.name for p in folder.rglob(".*.tmp"))


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_write(str(tmp_path / "new.txt")) as f:
            f.write("x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~umask
        (tmp_path / "kept.txt").write_text("old")
        os.chmod(tmp_path / "kept.txt", 0o640)
        with atomic_write(str(tmp_path / "kept.txt")) as f:
            f.write("new")
        assert (tmp_path / "kept.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_a_failed_write_names_the_path_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("previous")
    code = (
        "import sys; from detpre.utils.file_io import atomic_write\n"
        f"with atomic_write({str(target)!r}) as f:\n    f.write('x' * 100000)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], preexec_fn=limited(10000), capture_output=True, text=True)
    assert done.returncode != 0
    assert f"WriteError: cannot write {target}: File too large" in done.stderr
    assert target.read_text() == "previous" and leftovers(tmp_path) == []


def test_the_folder_cannot_be_written(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'a.txt'}: Read-only file system"):
        with atomic_write(str(tmp_path / "a.txt")) as f:
            f.write("x")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.undo()
    with pytest.raises(WriteError, match=f"cannot write {blocked / 'sub' / 'b.txt'}: Not a directory"):
        with atomic_write(str(blocked / "sub" / "b.txt")) as f:
            f.write("x")


def kaist_tree(root: Path, frames: int, noisy_from: int) -> Path:
    """A KAIST root of ``frames`` frames; those from ``noisy_from`` on are noise (large PNGs)."""
    rng = np.random.default_rng(0)
    keys = [f"set06/V000/I{i:05d}" for i in range(frames)]
    for i, key in enumerate(keys):
        set_id, video, frame = key.split("/")
        image = (
            rng.integers(0, 256, (512, 640, 3), dtype=np.uint8)
            if i >= noisy_from
            else np.full((512, 640, 3), 90, np.uint8)
        )
        for modality in ("visible", "lwir"):
            path = root / "images" / set_id / video / modality / f"{frame}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), image)
        annotation = root / "annotations" / set_id / video / f"{frame}.txt"
        annotation.parent.mkdir(parents=True, exist_ok=True)
        annotation.write_text("% bbGt version=3\nperson 100 100 40 80 0 0 0 0 0 0 0\n")
    (root / "imageSets").mkdir()
    (root / "imageSets" / "mini.txt").write_text("".join(f"{k}\n" for k in keys))
    return root


def test_visualize_kaist_on_a_full_disk_stops_at_the_file_it_could_not_write(tmp_path):
    root = kaist_tree(tmp_path / "kaist", frames=5, noisy_from=3)
    out = tmp_path / "vis"
    argv = [
        sys.executable,
        str(REPO / "tools" / "visualize_kaist.py"),
        "--dataset",
        "kaist_vis_full",
        "--register",
        str(root),
        "mini",
        "original",
        "--output-dir",
        str(out),
    ]
    done = subprocess.run(argv, preexec_fn=limited(400_000), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert errors == [f"error: cannot write {out / 'set06_V000_I00003.png'}: File too large"], done.stderr
    assert "Wrote" not in done.stdout
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"set06_V000_I{i:05d}.png" for i in range(3)]  # the frames before it, whole
    assert all(cv2.imread(str(out / name)) is not None for name in written) and leftovers(out) == []


def test_visualize_kaist_reports_a_truncated_frame_by_name(tmp_path, capsys):
    root = kaist_tree(tmp_path / "kaist", frames=2, noisy_from=0)
    frame = root / "images" / "set06" / "V000" / "visible" / "I00001.jpg"
    frame.write_bytes(frame.read_bytes()[:2000])
    argv = [
        "--dataset",
        "kaist_vis_truncated",
        "--register",
        str(root),
        "mini",
        "original",
        "--output-dir",
        str(tmp_path / "vis"),
    ]
    assert tool("visualize_kaist").main(argv) == 2
    assert f"error: Cannot read image {frame}: truncated JPEG (no End-Of-Image marker), 2000 bytes." in (
        capsys.readouterr().err
    )


def test_make_subset_into_a_read_only_folder(tmp_path, monkeypatch, capsys, demo_root):
    # demo_root: the data detpre_demo_val names (conftest) is drawn before writes are blocked,
    # so the only write left, and the only message, is the subset's.
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    output = tmp_path / "subset.json"
    assert tool("make_subset").main(["--dataset", "detpre_demo_val", "--size", "5", "--output", str(output)]) == 1
    assert capsys.readouterr().err.strip() == f"error: cannot write {output}: Permission denied"
    assert not output.exists()


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_names_its_file_and_leaves_no_half(tmp_path, demo_env):
    command = [
        sys.executable,
        str(REPO / "tools" / "train_net.py"),
        "--config-file",
        str(DEMO_CONFIG),
        *TINY_DEMO_OPTS,
        "SOLVER.MAX_ITER",
        "4",
        "SOLVER.STEPS",
        "(2, 3)",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "SOLVER.WARMUP_ITERS",
        "1",
        "TEST.EVAL_PERIOD",
        "0",
        "DATASETS.TEST",
        "()",
        "DATALOADER.NUM_WORKERS",
        "0",
        "OUTPUT_DIR",
        str(tmp_path),
    ]
    done = subprocess.run(
        command, env=demo_env, preexec_fn=limited(8_000_000), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert errors == [f"error: cannot write {tmp_path / 'model_0000001.pth'}: File too large"], done.stderr[-3000:]
    assert "model_0000001.pth: File too large" in (tmp_path / "log.txt").read_text()
    assert not list(tmp_path.glob("model_*.pth")) and not (tmp_path / "last_checkpoint").exists()
    assert leftovers(tmp_path) == []
