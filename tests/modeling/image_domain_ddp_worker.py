"""Run by tests/modeling/test_image_domain_distributed.py: two CPU processes (gloo) take
ImageDomainPretrainer steps under DDP, then each rank reports its queue and weights.

    python tests/modeling/image_domain_ddp_worker.py OUT_DIR NORM
"""

import json
import os
import sys

import torch
from detectron2.config import get_cfg
from detectron2.engine import create_ddp_model, launch
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from detpre import add_detpre_config
from detpre.modeling.build import build_model
from detpre.modeling.meta_arch.image_domain_contrast import shuffle_across_ranks, unshuffle_across_ranks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL_BATCH = 2


def main(out_dir: str, norm: str) -> None:
    torch.set_num_threads(1)
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "Demo", "image_domain_mocov2_R18_FPN.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", norm, "MODEL.FPN.NORM", norm])
    cfg.MODEL.IMAGE_DOMAIN.EMBED_DIM, cfg.MODEL.IMAGE_DOMAIN.HIDDEN_DIM = 8, 16
    # MoCo's random start, larger than the 2 x 4 keys enqueued: its untouched half shows whether
    # every rank starts from the same queue (rank 0's) although their RNGs differ.
    cfg.MODEL.IMAGE_DOMAIN.QUEUE_SIZE, cfg.MODEL.IMAGE_DOMAIN.QUEUE_START = 16, "random"
    cfg.SOLVER.IMS_PER_BATCH = LOCAL_BATCH * comm.get_world_size()
    torch.manual_seed(comm.get_rank())  # other inits per rank: DDP must broadcast rank 0's
    module = build_model(cfg)
    model = create_ddp_model(module, broadcast_buffers=False, device_ids=None)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    g = torch.Generator().manual_seed(100 + comm.get_rank())  # each rank its own images
    with EventStorage() as storage:
        for _ in range(2):
            inputs = [
                {"views": [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)} for _ in "ab"]}
                for _ in range(LOCAL_BATCH)
            ]
            losses = model(inputs)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            storage.step()
    x = torch.arange(LOCAL_BATCH * 3, dtype=torch.float32).view(LOCAL_BATCH, 3) + 100 * comm.get_rank()
    shuffled, order = shuffle_across_ranks(x)
    queue = module.queues["global"]
    report = {
        "rank": comm.get_rank(),
        "queue": queue.keys.tolist(),
        "ptr": int(queue.ptr),
        "filled": int(queue.filled),
        "weights": [p.sum().item() for p in module.encoder_q.parameters()],
        "shuffle_keys": module.shuffle_keys,
        "key_norms": sorted({type(m).__name__ for m in module.encoder_k.modules() if "Norm" in type(m).__name__}),
        "round_trip": torch.equal(unshuffle_across_ranks(shuffled, order), x),
        "order": order.tolist(),
    }
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    launch(main, 2, dist_url="auto", args=(sys.argv[1], sys.argv[2]))
