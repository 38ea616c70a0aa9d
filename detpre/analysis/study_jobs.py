"""How a study's runs are run: one after another here, or as cluster jobs through submitit.

A study (:mod:`.init_study`) is a list of :class:`StudyJob` — ``tools/train_net.py`` runs and
the weight conversions between pre-training and fine-tuning — each with the jobs it needs
finished first and a test of whether it is done (its folder holds the final checkpoint and
evaluation, its converted weights exist). Every job is idempotent: a job that is done is never
run again, an interrupted one resumes (``--resume``).

* :class:`SequentialLauncher` runs the jobs in order in child processes (the study's
  behaviour on one machine): SIGTERM reaches the run in progress, which saves a checkpoint,
  and stops the study after it.
* :class:`SubmititLauncher` hands every job whose prerequisites are done to a submitit
  executor — ``slurm`` for a SLURM cluster, ``local`` (submitit's local executor) for one
  machine and the tests — and records what it submitted in ``<study>/jobs.json``, so that
  running the study again submits the jobs that became ready, leaves the running ones alone,
  resubmits the failed ones, and builds the table from whatever has finished. With ``wait``
  it keeps doing so until nothing is left to run. A job that reaches its time limit or is
  preempted is requeued by submitit (:class:`CommandJob` is checkpointable: the run saves a
  checkpoint on SIGTERM and the requeued job resumes from it), so a multi-day run fits in
  jobs of a cluster's time limit.
"""

import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import submitit

from ..utils.file_io import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "JOBS_FILE",
    "LAUNCHERS",
    "CommandJob",
    "JobOutcome",
    "SequentialLauncher",
    "StudyJob",
    "SubmititLauncher",
    "submitit_settings",
]

JOBS_FILE = "jobs.json"
#: submitit's states of a job that is queued or running (SLURM's, and the local executor's).
_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}
#: ``--launcher`` values: here one after another, submitit's local executor, SLURM.
LAUNCHERS = ("local", "submitit-local", "slurm")
#: The local executor's time limit when none is given (submitit's own, 2 minutes, would
#: requeue every run every 2 minutes).
LOCAL_TIMEOUT_MIN = 3 * 24 * 60
#: Time limits a study job may reach and be requeued (it resumes each time): a 6x schedule is
#: days of jobs of a cluster's usual limit.
MAX_REQUEUES = 100


@dataclass
class StudyJob:
    """One process of a study: its command, where its output goes, and when it is done."""

    name: str
    command: List[str]
    log_file: str
    is_done: Callable[[], bool]
    needs: Tuple[str, ...] = ()
    describe: str = ""


@dataclass
class JobOutcome:
    """Why a job did not finish in this session: ``status`` is "failed", "stopped", "not run",
    "waiting" (its prerequisites are not done) or "submitted" (queued or running on a cluster)."""

    status: str
    why: str = ""


class CommandJob(submitit.helpers.Checkpointable):
    """The body of a cluster job: one command, its output appended to a log file.

    On a time limit or a preemption submitit calls :meth:`checkpoint`, which passes SIGTERM to
    the command (``tools/train_net.py`` saves a checkpoint and exits) and requeues the same
    command, which resumes (``--resume``). The command ignores SIGUSR2, the signal submitit
    gets first, which would otherwise end it without a checkpoint where the cluster signals
    every process of the job.
    """

    def __init__(self) -> None:
        self._child: Optional[subprocess.Popen] = None

    def __call__(self, command: Sequence[str], log_file: str) -> int:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        with open(log_file, "a") as out:
            self._child = subprocess.Popen(
                list(command), stdout=out, stderr=subprocess.STDOUT, preexec_fn=_ignore_sigusr2
            )
            rc = self._child.wait()
        if rc != 0:
            raise RuntimeError(f"{subprocess.list2cmdline(command[:2])} exited with status {rc}; see {log_file}")
        return rc

    def checkpoint(self, command: Sequence[str], log_file: str) -> submitit.helpers.DelayedSubmission:
        child = self._child
        if child is not None and child.returncode is None:
            child.send_signal(signal.SIGTERM)
            # Not child.wait(): this runs in a signal handler, maybe inside that very wait,
            # whose lock it holds.
            try:
                os.waitpid(child.pid, 0)
            except ChildProcessError:  # already reaped
                pass
        return submitit.helpers.DelayedSubmission(CommandJob(), command, log_file)


def _ignore_sigusr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no output)"


def _run_child(command: List[str], log_file: str, stop: threading.Event) -> int:
    """Run ``command`` with its output appended to ``log_file``; return its exit status.

    Ctrl-C reaches the child directly (same process group), so this waits for it to save its
    checkpoint rather than killing it; a SIGTERM to the study is forwarded to the child and
    ``stop`` is set, so the study ends after the run has saved.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    children: List[subprocess.Popen] = []

    def forward(signum, frame):
        stop.set()
        for child in children:
            child.send_signal(signum)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, forward)
    try:
        with open(log_file, "a") as out:
            children.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
            try:
                return children[0].wait()
            except KeyboardInterrupt:
                stop.set()
                children[0].wait()  # the child got the same Ctrl-C: let it save its checkpoint
                raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _blocked(job: StudyJob, jobs: Dict[str, StudyJob]) -> List[str]:
    return [n for n in job.needs if not jobs[n].is_done()]


class SequentialLauncher:
    """Run the jobs one after another in child processes, in the order given."""

    def run(self, jobs: Sequence[StudyJob], log: Callable[[str], None] = print) -> Dict[str, JobOutcome]:
        by_name = {j.name: j for j in jobs}
        stop = threading.Event()
        outcome: Dict[str, JobOutcome] = {}
        for i, job in enumerate(jobs, 1):
            where = f"[{i}/{len(jobs)}] {job.name}"
            if job.is_done():
                log(f"{where}: finished, skipped")
                continue
            blocked = _blocked(job, by_name)
            if stop.is_set() or blocked:
                why = "the study was stopped before this run" if stop.is_set() else f"{', '.join(blocked)} not done"
                outcome[job.name] = JobOutcome("not run", why)
                continue
            log(f"{where}: {job.describe or 'running'}")
            rc = _run_child(job.command, job.log_file, stop)
            if stop.is_set():
                outcome[job.name] = JobOutcome(
                    "stopped", "stopped by a signal after saving a checkpoint; run the study again to resume it"
                )
                log(f"{where}: stopped; run the study again to resume")
            elif rc != 0:
                outcome[job.name] = JobOutcome("failed", f"exited with status {rc}; see {job.log_file}")
                log(f"{where}: FAILED (exit status {rc}); last lines of {job.log_file}:\n{_tail(job.log_file)}")
            elif not job.is_done():
                outcome[job.name] = JobOutcome("failed", f"ended without its results; see {job.log_file}")
                log(f"{where}: FAILED: {outcome[job.name].why}")
        return outcome


@dataclass
class SubmititLauncher:
    """Submit the ready jobs to a submitit executor (``cluster`` "slurm" or "local").

    ``parameters`` go to submitit's ``update_parameters`` (``timeout_min``, ``slurm_partition``,
    ``gpus_per_node``, ``nodes``, ``cpus_per_task``, ``slurm_additional_parameters``, ...); each
    job runs one ``tools/train_net.py`` (which starts its own GPU processes with
    ``--num-gpus``) or one conversion.
    """

    folder: str
    cluster: str = "slurm"
    parameters: Dict[str, Any] = field(default_factory=dict)
    wait: bool = False
    poll_seconds: float = 30.0

    def __post_init__(self):
        if self.cluster not in ("slurm", "local"):
            raise ValueError(f"cluster {self.cluster!r} is not 'slurm' or 'local'")
        self._live: Dict[str, Any] = {}  # job name -> submitit job submitted by this process
        self._executor("check")  # a parameter submitit does not know fails here, before any job

    def _executor(self, name: str) -> submitit.AutoExecutor:
        try:
            executor = submitit.AutoExecutor(
                folder=os.path.join(self.folder, "submitit", "%j"),
                cluster=self.cluster,
                slurm_max_num_timeout=MAX_REQUEUES,
                local_max_num_timeout=MAX_REQUEUES,
            )
        except RuntimeError as e:  # submitit's "Could not detect srun": not a SLURM machine
            raise ValueError(f"--launcher {self.cluster}: {e}") from None
        try:
            executor.update_parameters(name=name, **self.parameters)
        except (NameError, AssertionError, TypeError) as e:  # submitit's errors for unknown or mistyped ones
            raise ValueError(f"submitit parameters {self.parameters}: {e}") from None
        return executor

    @property
    def _record_file(self) -> str:
        return os.path.join(self.folder, JOBS_FILE)

    def _records(self) -> Dict[str, Dict[str, Any]]:
        if not os.path.isfile(self._record_file):
            return {}
        try:
            with open(self._record_file) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"{self._record_file} cannot be read ({e}): remove it to forget the submitted jobs"
            ) from None

    def _state(self, name: str, record: Dict[str, Any]) -> str:
        if name in self._live:
            return str(self._live[name].state).upper()
        if record.get("cluster") == "slurm":
            return str(submitit.SlurmJob(record["folder"], record["job_id"]).state).upper()
        pid = record.get("pid")  # a local job of an earlier session: is its process alive?
        try:
            os.kill(int(pid), 0)
            return "RUNNING"
        except (TypeError, ValueError, OSError):
            return "FINISHED"

    def _submit(self, job: StudyJob) -> Dict[str, Any]:
        submitted = self._executor(job.name).submit(CommandJob(), job.command, job.log_file)
        self._live[job.name] = submitted
        record = {"job_id": str(submitted.job_id), "cluster": self.cluster, "folder": str(submitted.paths.folder)}
        if self.cluster == "local":  # the local executor's job id is its controller's pid
            record["pid"] = int(submitted.job_id)
        return record

    def _pass(
        self, jobs: Sequence[StudyJob], log: Callable[[str], None], given_up: Dict[str, set]
    ) -> Dict[str, JobOutcome]:
        by_name = {j.name: j for j in jobs}
        records = self._records()
        outcome: Dict[str, JobOutcome] = {}
        for job in jobs:
            if job.is_done():
                continue
            if job.name in given_up:
                why = f"its jobs {sorted(given_up[job.name])} failed; see {job.log_file}"
                outcome[job.name] = JobOutcome("failed", why)
                continue
            record = records.get(job.name)
            if record is not None:
                state = self._state(job.name, record)
                if state in _ACTIVE or state == "UNKNOWN":
                    outcome[job.name] = JobOutcome("submitted", f"job {record['job_id']} is {state.lower()}")
                    continue
            blocked = _blocked(job, by_name)
            if blocked:
                outcome[job.name] = JobOutcome("waiting", f"{', '.join(blocked)} not done")
                continue
            again = " again" if record is not None else ""
            records[job.name] = self._submit(job)
            log(f"{job.name}: submitted{again} as job {records[job.name]['job_id']} ({job.describe or 'run'})")
            outcome[job.name] = JobOutcome("submitted", f"job {records[job.name]['job_id']}")
        with atomic_write(self._record_file) as f:
            json.dump(records, f, indent=1)
        return outcome

    def run(self, jobs: Sequence[StudyJob], log: Callable[[str], None] = print) -> Dict[str, JobOutcome]:
        """Submit what is ready; with ``wait``, poll and submit what becomes ready until no job
        is queued or running. A job whose submissions end twice without its results is not
        submitted again in this session (it would fail again): the others go on."""
        by_name = {j.name: j for j in jobs}
        failed: Dict[str, set] = {}  # study job -> ids of its submitted jobs that ended without its results
        while True:
            for name, submitted in self._live.items():
                if submitted.done() and not by_name[name].is_done():
                    failed.setdefault(name, set()).add(str(submitted.job_id))
            given_up = {n: ids for n, ids in failed.items() if len(ids) >= 2}
            outcome = self._pass(jobs, log, given_up)
            if not self.wait or not any(o.status == "submitted" for o in outcome.values()):
                return outcome
            time.sleep(self.poll_seconds)


def submitit_settings(
    launcher: str,
    parameters: Dict[str, Any],
    num_gpus: Optional[int],
    num_machines: Optional[int],
    dist_url: Optional[str],
) -> Tuple[Dict[str, Any], List[str]]:
    """The submitit parameters of one study job and the ``train_net.py`` flags it needs.

    One job is one ``tools/train_net.py`` process on one machine, which starts its own
    ``--num-gpus`` processes: ``gpus_per_node`` is ``--num-gpus`` and ``tasks_per_node`` 1
    (given otherwise, they are refused, not replaced). Jobs that share a machine must not share
    Detectron2's default port, so ``--dist-url auto`` unless one is given. SLURM needs the
    cluster's time limit (``timeout_min``); a run longer than it is requeued and resumes.
    """
    if launcher not in LAUNCHERS[1:]:
        raise ValueError(f"--launcher {launcher!r}: submitit launchers are {list(LAUNCHERS[1:])}")
    if (num_machines or 1) > 1:
        raise ValueError(
            f"--num-machines {num_machines} with --launcher {launcher}: a study job runs on one machine "
            "(--num-gpus per job); run a multi-machine cell with --launcher local on each machine"
        )
    gpus = num_gpus or 1
    params = dict(parameters)
    for key, value in (("gpus_per_node", gpus), ("tasks_per_node", 1)):
        if key in params and params[key] != value:
            raise ValueError(
                f"submitit {key}={params[key]!r}: a study job is one tools/train_net.py process with "
                f"--num-gpus {gpus}, so {key} must be {value} (set --num-gpus instead)"
            )
        params[key] = value
    if "timeout_min" not in params:
        if launcher == "slurm":
            raise ValueError(
                "--launcher slurm needs the cluster's time limit: --submitit timeout_min=MINUTES (a run "
                "longer than it is requeued and resumes from its last checkpoint)"
            )
        params["timeout_min"] = LOCAL_TIMEOUT_MIN
    extra = ["--dist-url", "auto"] if dist_url is None and gpus > 1 else []
    return params, extra
