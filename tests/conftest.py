"""Shared fixtures: the real KAIST data beside the checkout, fresh configs, the tools by path."""

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_script(folder: str, name: str) -> ModuleType:
    module_name = f"detpre_{folder}_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO / folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module, loaded by path: ``tools/`` is not a package (Detectron2's
    wheel installs a top-level ``tools`` package of its own)."""
    return _load_script("tools", name)


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module, loaded by path (``benchmarks/`` is not a package)."""
    return _load_script("benchmarks", name)


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


_DEMO_ROOT_VAR = "DETPRE_DEMO_ROOT"


def pytest_configure(config):
    """Point ``$DETPRE_DEMO_ROOT`` at a folder of this test session before detpre is imported.

    detpre registers ``detpre_demo_train``/``_val`` when it is imported, with the root that
    ``$DETPRE_DEMO_ROOT`` names *then* (Detectron2's builtin datasets are rooted the same way);
    setting the variable later changes nothing in this process. Without this, tests that use
    those names in-process would read, and the first of them draw, ``datasets/detpre_demo`` in
    the checkout: in a fresh clone, the draw ran inside whichever such test came first (and its
    log line went into that test's captured stderr). Here every test, in-process or
    subprocess, reads the one dataset the ``demo_root`` fixture draws, wherever it is run from.
    """
    config.detpre_demo_previous = os.environ.get(_DEMO_ROOT_VAR)
    config.detpre_demo_parent = tempfile.mkdtemp(prefix="detpre-tests-")
    os.environ[_DEMO_ROOT_VAR] = os.path.join(config.detpre_demo_parent, "detpre_demo")


def pytest_unconfigure(config):
    if config.detpre_demo_previous is None:
        os.environ.pop(_DEMO_ROOT_VAR, None)
    else:
        os.environ[_DEMO_ROOT_VAR] = config.detpre_demo_previous
    shutil.rmtree(config.detpre_demo_parent, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_root() -> Path:
    """The synthetic demo dataset of this test session (drawn once, on first use), the one
    that ``detpre_demo_train``/``_val`` name here and in the tools the tests run."""
    from detpre.data.datasets.demo import ensure_demo_dataset

    return Path(ensure_demo_dataset(os.environ[_DEMO_ROOT_VAR]))


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
