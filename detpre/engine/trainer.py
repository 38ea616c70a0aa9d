"""``DetpreTrainer``: Detectron2's ``DefaultTrainer`` for long, preemptible studies.

What it changes, and why:

* the training loader is :class:`~detpre.data.build.ResumableTrainLoader`, and every RNG
  is seeded per step (:class:`~detpre.engine.hooks.StepSeed`), so ``--resume`` after a kill
  continues the very same run: iteration, optimizer, LR schedule, data position, RNG; precise
  BN (``TEST.PRECISE_BN``) replays that loader's batches (:class:`~detpre.engine.hooks.ResumablePreciseBN`);
* checkpoints are atomic and a broken one is skipped at resume
  and 3-channel stems are inflated for multispectral inputs (:class:`~detpre.checkpoint.DetpreCheckpointer`);
  SIGTERM/Ctrl-C save one;
* a NaN/inf loss stops the run with the last good checkpoint named;
* several processes on a machine without GPUs train with gloo (DDP without device ids),
  and SyncBN configs run anywhere (BN in one process, all-reduce BN on CPU processes);
* mappers and evaluators are chosen by config / dataset metadata (KAIST, two views), and
  ``TEST.AUG.ENABLED`` adds Detectron2's test-time augmentation to every evaluation
  (:meth:`DetpreTrainer.test_with_TTA`, results under "_TTA" names);
* the step runs in bf16 or fp16 where the GPU has it, and the model in channels-last memory
  or with a compiled backbone, as the config asks (:mod:`detpre.engine.train_loop`,
  :mod:`detpre.modeling.speed_switches`).
"""

import logging
import os
import weakref
from collections import OrderedDict
from typing import Any, Optional

from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, PeriodicWriter, TrainerBase, create_ddp_model
from detectron2.engine.hooks import EvalHook, LRScheduler
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from fvcore.nn.precise_bn import get_bn_modules

from ..checkpoint import DetpreCheckpointer
from ..data.build import ResumableTrainLoader, build_resumable_train_loader, train_dataset_dicts
from ..data.dataset_mappers import MAPPER_REGISTRY
from ..evaluation import build_evaluator
from ..modeling.build import build_model
from ..modeling.speed_switches import apply_execution_options
from ..utils.cli import WRITE_ERRNOS
from ..utils.file_io import WriteError
from .hooks import CheckpointOnSignal, ResumablePreciseBN, StepSeed, TimedPeriodicWriter
from .train_loop import build_step_trainer
from .tta import build_tta_model, check_tta_supported

logger = logging.getLogger(__name__)


class DetpreTrainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer`` with exact resume, safe checkpoints and detpre's data."""

    def __init__(self, cfg: CfgNode):
        # DefaultTrainer.__init__ hard-codes its checkpointer and DDP device ids (which fail
        # on CPU processes), so its construction is restated here in the same order.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_cpu = cfg.MODEL.DEVICE == "cpu"
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=None if on_cpu else [comm.get_local_rank()])
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetpreCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        data_loader = self._trainer.data_loader
        resumable = isinstance(data_loader, ResumableTrainLoader)
        seed = data_loader.plan.seed if resumable else max(self.cfg.SEED, 0)
        cfg = self.cfg
        replay_precise_bn = resumable and cfg.TEST.PRECISE_BN.ENABLED
        if replay_precise_bn:
            # DefaultTrainer's PreciseBN would read the dataset again into a second loader, which a
            # resume restarts; ResumablePreciseBN (inserted below) replays this loader's batches.
            self.cfg = cfg.clone()
            self.cfg.defrost()
            self.cfg.TEST.PRECISE_BN.ENABLED = False
        try:
            hooks = [
                TimedPeriodicWriter(hook._writers, cfg.LOG_PERIOD, cfg.LOG_SECONDS, cfg.OUTPUT_DIR)
                if type(hook) is PeriodicWriter
                else hook
                for hook in super().build_hooks()
            ]
        finally:
            self.cfg = cfg
        if cfg.TEST.AUG.ENABLED:
            # Fail now, not at the first evaluation hours into the run.
            check_tta_supported(cfg, self.model)
            # Right after Detectron2's evaluation: before the writer, so that the "_TTA" metrics
            # reach metrics.json at the same iteration.
            at = next(i for i, h in enumerate(hooks) if isinstance(h, EvalHook)) + 1
            hooks.insert(at, EvalHook(cfg.TEST.EVAL_PERIOD, self._test_with_tta_and_save_results))
        if replay_precise_bn and get_bn_modules(self.model):
            # Where Detectron2 puts its own: after the LR scheduler, before the checkpointer
            # (which saves the statistics) and the evaluation (which uses them).
            at = next(i for i, h in enumerate(hooks) if isinstance(h, LRScheduler)) + 1
            precise_bn = ResumablePreciseBN(cfg.TEST.EVAL_PERIOD, self.model, data_loader, cfg.TEST.PRECISE_BN.NUM_ITER)
            hooks.insert(at, precise_bn)
        # Seeding comes first (before any other hook's before_step); the signal hook last,
        # so that a step's periodic checkpoint and metrics are written before it stops.
        return [StepSeed(seed)] + hooks + [CheckpointOnSignal(self.checkpointer)]

    def _test_with_tta_and_save_results(self) -> "OrderedDict[str, Any]":
        results = self.test_with_TTA(self.cfg, self.model)
        # DefaultTrainer.train checks TEST.EXPECTED_RESULTS against these: "bbox_TTA" too.
        self._last_eval_results = OrderedDict(getattr(self, "_last_eval_results", None) or {})
        self._last_eval_results.update(results)
        return results

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        data_loader = self._trainer.data_loader
        if isinstance(data_loader, ResumableTrainLoader):
            data_loader.plan.seed = next(h for h in self._hooks if isinstance(h, StepSeed)).seed
            data_loader.set_start_iter(self.start_iter)

    def train(self):
        try:
            return super().train()
        except FloatingPointError as e:
            last = self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else ""
            raise FloatingPointError(
                f"{e}\nTraining diverged at iteration {self.iter}. Last good checkpoint: "
                f"{last or 'none (no checkpoint was written yet)'}."
            ) from e

    @classmethod
    def build_model(cls, cfg: CfgNode):
        """Detectron2's model, with SyncBN resolved for this process count (BN in one), in the
        memory format and with the compiled backbone the config asks for."""
        model = build_model(cfg)
        logger.info("Model:\n%s", model)
        return apply_execution_options(cfg, model)

    @classmethod
    def build_mapper(cls, cfg: CfgNode, is_train: bool):
        """The mapper named by ``INPUT.DATASET_MAPPER_NAME``; None lets Detectron2 use its own."""
        name = cfg.INPUT.DATASET_MAPPER_NAME
        return MAPPER_REGISTRY.get(name)(cfg, is_train) if name else None

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        mapper = cls.build_mapper(cfg, True)
        if cfg.DATALOADER.RESUMABLE and cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
            return build_resumable_train_loader(cfg, mapper)
        if cfg.DATALOADER.RESUMABLE:
            logger.warning(
                "DATALOADER.SAMPLER_TRAIN %s: using Detectron2's loader, which restarts its data stream on --resume.",
                cfg.DATALOADER.SAMPLER_TRAIN,
            )
        return build_detection_train_loader(cfg, mapper=mapper, dataset=train_dataset_dicts(cfg))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name, mapper=cls.build_mapper(cfg, False))

    @classmethod
    def test(cls, cfg: CfgNode, model, evaluators=None):
        """Detectron2's evaluation; a result file that cannot be written (a full disk under
        ``inference/``) is a ``WriteError`` naming where, not a traceback from the writer."""
        try:
            return super().test(cfg, model, evaluators)
        except OSError as e:
            if isinstance(e, WriteError) or e.errno not in WRITE_ERRNOS:
                raise
            raise WriteError(e.filename or f"{cfg.OUTPUT_DIR}/inference", e) from e
        except RuntimeError as e:  # torch.save of instances_predictions.pth on a full disk
            if "unexpected pos" not in str(e) and "file write failed" not in str(e):
                raise
            raise WriteError(f"{cfg.OUTPUT_DIR}/inference", e) from e

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model) -> "OrderedDict[str, Any]":
        """Evaluate ``model`` with test-time augmentation (``TEST.AUG``), as Detectron2's
        ``tools/train_net.py`` does: each result key gets a "_TTA" suffix ("bbox_TTA"; with
        several test datasets, "<dataset>_TTA"), files go to ``OUTPUT_DIR/inference_TTA/<dataset>``."""
        logger.info("Running inference with test-time augmentation ...")
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, build_tta_model(cfg, model), evaluators)
        return OrderedDict((f"{key}_TTA", value) for key, value in results.items())

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
        """The evaluators registered for the dataset's ``evaluator_type`` (detpre.evaluation.build)."""
        return build_evaluator(cfg, dataset_name, output_folder)
