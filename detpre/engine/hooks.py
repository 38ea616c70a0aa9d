"""Training hooks that make long runs reproducible and stoppable."""

import contextlib
import logging
import os
import random
import signal
import threading
import time
from typing import Dict, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from detectron2.engine import HookBase, PeriodicWriter
from detectron2.engine.hooks import PreciseBN
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter

from ..data.build import ResumableTrainLoader, derive_seed
from ..utils.file_io import WriteError

logger = logging.getLogger(__name__)


class StepSeed(HookBase):
    """Seed every RNG from (seed, rank, iteration) before each step.

    RPN/ROI sampling and dropout draw from torch's global RNG. Re-seeding per step makes
    that draw a function of the iteration alone, so a resumed run continues exactly as the
    uninterrupted one without storing RNG states (which only rank 0 could save). The seed
    is saved with the trainer state and restored on resume, so ``SEED -1`` resumes too.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        step_seed = derive_seed(self.seed, comm.get_rank(), self.trainer.iter)
        random.seed(step_seed)
        np.random.seed(step_seed)
        torch.manual_seed(step_seed)

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed = int(state["seed"])


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global RNG states (CPU, and the GPUs once CUDA is
    initialised) on exit, whatever the block drew or re-seeded."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class ResumablePreciseBN(PreciseBN):
    """Detectron2's ``PreciseBN`` (``TEST.PRECISE_BN``) whose statistics are a function of the
    iteration, so that ``--resume`` continues the same run.

    Detectron2's hook keeps drawing from a second training loader: the statistics it sets at
    an iteration depend on how often it ran before, and after a resume they come from other
    images. They are saved in every checkpoint and are where the running averages continue
    from, so the resumed run would end with other BN buffers. Here each update replays the
    ``TEST.PRECISE_BN.NUM_ITER`` training batches up to the current iteration (the first ones
    early in a run) from the training loader's plan: the same images and augmentations the
    model trained on, mapped in this process, with no second dataset in memory, the
    training stream's position untouched and every global RNG restored afterwards (the
    mapper re-seeds them per batch, the model's forward passes draw from them). Its
    ``data_loader`` is the trainer's :class:`~detpre.data.build.ResumableTrainLoader`.
    """

    def update_stats(self) -> None:
        if self._disabled:
            return
        train = self._data_loader
        replay = ResumableTrainLoader(train.dataset, train.mapper, train.plan, num_workers=0)
        replay.set_start_iter(max(0, self.trainer.iter + 1 - self._num_iter))
        self._data_iter = iter(replay)
        with preserved_rng_state():
            super().update_stats()


class CheckpointOnSignal(HookBase):
    """On SIGTERM or SIGINT (Ctrl-C), finish the current step, save a checkpoint and exit.

    Schedulers of shared clusters send SIGTERM before preemption. The signal only sets a
    flag; the step in flight completes, so the saved state is consistent. With several
    processes the flag is all-reduced every step so that every rank stops at the same
    iteration (a rank stopping alone would hang the others in DDP's all-reduce).
    """

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer
        self._signal: Optional[int] = None
        self._previous = {}
        self._pid = os.getpid()

    def _handle(self, signum, frame):
        # DataLoader workers are forked with this handler installed, and Ctrl-C reaches the
        # whole process group: only the training process reacts (and logs it once).
        if os.getpid() != self._pid:
            return
        logger.warning("Received %s: saving a checkpoint after this step.", signal.Signals(signum).name)
        self._signal = signum

    def before_train(self):
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)

    def after_train(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _stop_requested(self) -> int:
        if comm.get_world_size() == 1:
            return self._signal or 0
        flag = torch.tensor([self._signal or 0], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def after_step(self):
        signum = self._stop_requested()
        if not signum:
            return
        iteration = self.trainer.iter
        self.checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
        logger.warning("Stopped at iteration %d; resume with --resume.", iteration)
        raise SystemExit(128 + signum)


class TimedPeriodicWriter(PeriodicWriter):
    """Detectron2's ``PeriodicWriter`` that also writes after the first step and whenever
    ``seconds`` have passed since its last write (``LOG_PERIOD``, ``LOG_SECONDS``).

    At several seconds an iteration (a KAIST detector on a CPU), 20 iterations are minutes
    of silence. A writer that fails (a full disk under ``metrics.json``) is a ``WriteError``
    naming the run's folder. The console line of an iteration is printed once: the final
    write of a run stopped right after a written step skips the printer (Detectron2's
    estimates its ETA from the iterations between two writes, of which there are none).
    """

    def __init__(self, writers, period: int = 20, seconds: float = 0.0, output_dir: str = ""):
        super().__init__(writers, period=period)
        self._seconds = seconds
        self._output_dir = output_dir
        self._last = 0.0
        self._last_iter = -1

    def before_train(self):
        self._last = time.perf_counter()

    def _write(self) -> None:
        iteration = self.trainer.storage.iter
        for writer in self._writers:
            if isinstance(writer, CommonMetricPrinter) and iteration == self._last_iter:
                continue
            try:
                writer.write()
            except OSError as e:
                where = getattr(e, "filename", None) or f"{self._output_dir or '.'} ({type(writer).__name__})"
                raise WriteError(where, e) from e
        self._last = time.perf_counter()
        self._last_iter = iteration

    def after_step(self):
        it = self.trainer.iter
        due = (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1 or it == self.trainer.start_iter
        if due or (self._seconds > 0 and time.perf_counter() - self._last >= self._seconds):
            self._write()

    def after_train(self):
        self._write()
        for writer in self._writers:
            writer.close()
