"""Shared fixtures: the real KAIST data beside the checkout, and fresh configs."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
