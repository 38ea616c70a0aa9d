"""ImageDomainPretrainer under DDP in two CPU processes: keys gathered from every rank before
they enter the queue and one random start for all (every rank keeps the same queue), and MoCo's
shuffle BN for BN backbones."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("norm", ["GN", "SyncBN"])
def test_every_rank_enqueues_the_keys_of_every_rank(tmp_path, norm):
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "modeling" / "image_domain_ddp_worker.py"), str(tmp_path), norm],
        check=True,
        timeout=300,
        capture_output=True,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # Two steps of 2 x 2 images fill half the queue of 16 with both ranks' keys; the other half is
    # still the random start, rank 0's on both ranks. The whole queue is the same on each.
    assert all((r["ptr"], r["filled"]) == (8, 8) for r in ranks)
    assert ranks[0]["queue"] == ranks[1]["queue"]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert all(r["round_trip"] for r in ranks) and ranks[0]["order"] == ranks[1]["order"]
    if norm == "GN":  # per-sample statistics: nothing to shuffle
        assert not any(r["shuffle_keys"] for r in ranks)
    else:  # the key encoder's statistics are per process, of a shuffled share of the keys
        assert all(r["shuffle_keys"] and "BatchNorm2d" in r["key_norms"] for r in ranks)
        assert not any("NaiveSyncBatchNorm" in r["key_norms"] for r in ranks)
