"""Run by tests/test_distributed.py: train with N CPU processes, then each rank reports.

    python tests/engine/distributed_worker.py OUT_DIR NUM_PROCS [train_net args...]

Every rank writes ``OUT_DIR/rank{r}.json`` with a digest of its model weights after
training and what its config and datasets resolved to, so the test can check that the
ranks agree without trusting any rank's word for the others.
"""

import hashlib
import json
import os
import sys

import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import launch
from detectron2.utils import comm

import detpre  # noqa: F401
from detpre.engine.defaults import detpre_argument_parser, setup_cfg
from detpre.engine.trainer import DetpreTrainer


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(out_dir: str, args) -> None:
    cfg = setup_cfg(args)
    trainer = DetpreTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    report = {
        "rank": comm.get_rank(),
        "world_size": comm.get_world_size(),
        "weights": weights_digest(model),
        "config": cfg.dump(),
        "train_images": sorted(str(r["image_id"]) for r in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])),
        "iter": trainer.iter,
        "norms": sorted({type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__}),
        "hooks": [type(h).__name__ for h in trainer._hooks],
        "eval_results": sorted(getattr(trainer, "_last_eval_results", None) or {}),
    }
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    out_dir, num_procs = sys.argv[1], int(sys.argv[2])
    args = detpre_argument_parser().parse_args(sys.argv[3:])
    launch(main, num_procs, dist_url="auto", args=(out_dir, args))
