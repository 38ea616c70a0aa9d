"""Shared fixtures: the real KAIST data beside the checkout, fresh configs, the tools by path."""

import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module, loaded by path: ``tools/`` is not a package (Detectron2's
    wheel installs a top-level ``tools`` package of its own)."""
    module_name = f"detpre_tool_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (override: ``DETPRE_SHARED_DATA``)."""
    return Path(os.environ.get("DETPRE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real KAIST data not found at {path}")
    return path


@pytest.fixture
def cfg():
    """A mutable Detectron2 config with detpre's keys."""
    from detectron2.config import get_cfg

    from detpre import add_detpre_config

    c = get_cfg()
    add_detpre_config(c)
    return c


DEMO_CONFIG = REPO / "configs" / "Demo" / "faster_rcnn_R18_FPN_scratch.yaml"
# The demo detector made tinier still, for tests that train it many times.
TINY_DEMO_OPTS = [
    "MODEL.DEVICE",
    "cpu",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(96,)",
    "INPUT.MAX_SIZE_TRAIN",
    "128",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
]


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The synthetic demo dataset, generated once per test session."""
    from detpre.data.datasets.demo import ensure_demo_dataset

    root = tmp_path_factory.mktemp("detpre_demo")
    ensure_demo_dataset(str(root))
    return root


@pytest.fixture(scope="session")
def demo_env(demo_root):
    """Environment for subprocesses (tools/*.py) that read the session's demo dataset."""
    return dict(os.environ, DETPRE_DEMO_ROOT=str(demo_root))


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny models: on 2 shared cores a second thread mostly
    spin-waits (measured: tiny convolutions ran up to ~10x, an R50 step ~3x, slower with two).
    Used by modules with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_loggers():
    """Undo the logger set-up of tools run in this process: their handlers hold the streams of
    the test that ran them (pytest's captures, a temporary log.txt), closed afterwards."""
    yield
    from detectron2.utils.logger import setup_logger

    for name in ("detectron2", "fvcore", "detpre", "kaisteval"):
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            log.removeHandler(handler)
        log.propagate = True
    setup_logger.cache_clear()
