"""detpre.analysis.study_jobs: a study's jobs run in order here, or through submitit's local executor.

The commands are small Python scripts that leave a marker file when they succeed, so that what
runs, in which order, how often, and what is left waiting can be read off the files.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from detpre.analysis.study_jobs import (
    JOBS_FILE,
    LOCAL_TIMEOUT_MIN,
    SequentialLauncher,
    StudyJob,
    SubmititLauncher,
    submitit_settings,
)

SCRIPT = """
import os, sys, time
name, folder, seconds, rc = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
with open(os.path.join(folder, "order.txt"), "a") as f:
    f.write(name + "\\n")
time.sleep(seconds)
if rc == 0:
    open(os.path.join(folder, name + ".done"), "w").close()
print(name, "ran")
sys.exit(rc)
"""


def job(tmp_path: Path, name: str, needs=(), seconds: float = 0.0, rc: int = 0) -> StudyJob:
    script = tmp_path / "job.py"
    if not script.exists():
        script.write_text(SCRIPT)
    return StudyJob(
        name,
        [sys.executable, str(script), name, str(tmp_path), str(seconds), str(rc)],
        str(tmp_path / "logs" / f"{name}.log"),
        is_done=lambda: (tmp_path / f"{name}.done").is_file(),
        needs=tuple(needs),
        describe=f"running {name}",
    )


def order(tmp_path: Path):
    path = tmp_path / "order.txt"
    return path.read_text().split() if path.exists() else []


def test_sequential_runs_in_order_and_skips_what_cannot_run(tmp_path):
    jobs = [
        job(tmp_path, "a"),
        job(tmp_path, "b", needs=["a"]),
        job(tmp_path, "c", rc=3),
        job(tmp_path, "d", needs=["c"]),
    ]
    messages = []
    outcome = SequentialLauncher().run(jobs, log=messages.append)
    assert order(tmp_path) == ["a", "b", "c"]
    assert set(outcome) == {"c", "d"}
    assert outcome["c"].status == "failed" and "status 3" in outcome["c"].why
    assert outcome["d"].status == "not run" and outcome["d"].why == "c not done"
    assert "[3/4] c: FAILED (exit status 3)" in messages[-1] and "c ran" in messages[-1]  # the log's tail
    # Again: what finished is skipped, the failed job is tried again.
    outcome = SequentialLauncher().run(jobs, log=messages.append)
    assert order(tmp_path) == ["a", "b", "c", "c"] and set(outcome) == {"c", "d"}
    assert "[1/4] a: finished, skipped" in messages


def local_launcher(tmp_path: Path, wait: bool) -> SubmititLauncher:
    return SubmititLauncher(
        str(tmp_path / "study"), "local", {"timeout_min": 5, "tasks_per_node": 1}, wait=wait, poll_seconds=0.2
    )


def test_submitit_submits_what_is_ready_and_keeps_the_running_job(tmp_path):
    jobs = [job(tmp_path, "a", seconds=3), job(tmp_path, "b", needs=["a"])]
    first = local_launcher(tmp_path, wait=False).run(jobs, log=lambda m: None)
    assert first["a"].status == "submitted" and first["b"].status == "waiting"
    records = json.loads((tmp_path / "study" / JOBS_FILE).read_text())
    assert set(records) == {"a"} and records["a"]["cluster"] == "local"
    # A second session while a runs: a is left alone (not submitted twice), b still waits.
    second = local_launcher(tmp_path, wait=False).run(jobs, log=lambda m: None)
    assert second["a"].status == "submitted" and records["a"]["job_id"] in second["a"].why
    assert json.loads((tmp_path / "study" / JOBS_FILE).read_text())["a"] == records["a"]
    deadline = time.time() + 60
    while not (tmp_path / "a.done").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # the controller ends after the command
    third = local_launcher(tmp_path, wait=True).run(jobs, log=lambda m: None)
    assert third == {} and order(tmp_path) == ["a", "b"]
    assert "b ran" in (tmp_path / "logs" / "b.log").read_text()


def test_submitit_wait_stops_after_a_job_fails_twice(tmp_path):
    jobs = [job(tmp_path, "bad", rc=1), job(tmp_path, "after", needs=["bad"]), job(tmp_path, "ok")]
    messages = []
    outcome = local_launcher(tmp_path, wait=True).run(jobs, log=messages.append)
    assert outcome["bad"].status == "failed" and "failed" in outcome["bad"].why
    assert outcome["after"].status == "waiting" and "ok" not in outcome
    assert order(tmp_path).count("bad") == 2 and "ok" in order(tmp_path)
    assert sum("bad: submitted again" in m for m in messages) == 1


REQUEUED = """
import os, signal, sys, time
folder = sys.argv[1]
state = os.path.join(folder, "saved")
if os.path.exists(state):  # the requeued job: resume and finish
    open(os.path.join(folder, "resumed.done"), "w").close()
    sys.exit(0)

def save(signum, frame):
    open(state, "w").close()
    sys.exit(0)

signal.signal(signal.SIGTERM, save)
open(os.path.join(folder, "started"), "w").close()
time.sleep(120)
"""


def children(pid: int):
    """The processes whose parent is ``pid`` (read from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def test_a_preempted_job_saves_and_is_requeued(tmp_path):
    script = tmp_path / "requeued.py"
    script.write_text(REQUEUED)
    resumed = StudyJob(
        "resumed",
        [sys.executable, str(script), str(tmp_path)],
        str(tmp_path / "resumed.log"),
        is_done=lambda: (tmp_path / "resumed.done").is_file(),
    )
    launcher = local_launcher(tmp_path, wait=False)
    assert launcher.run([resumed], log=lambda m: None)["resumed"].status == "submitted"
    deadline = time.time() + 60
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.1)
    # What SLURM does before a time limit or a preemption: SIGUSR2 to the job's task (the
    # submitit process under the local executor's controller, whose pid is the job id).
    (controller,) = [int(r["job_id"]) for r in json.loads((tmp_path / "study" / JOBS_FILE).read_text()).values()]
    (task,) = children(controller)
    os.kill(task, signal.SIGUSR2)
    launcher.wait = True
    assert launcher.run([resumed], log=lambda m: None) == {}
    # The command saved on SIGTERM and the same job ran it again, which resumed: no resubmission.
    assert (tmp_path / "saved").is_file() and (tmp_path / "resumed.done").is_file()
    assert len(json.loads((tmp_path / "study" / JOBS_FILE).read_text())) == 1
    err = "".join(p.read_text() for p in (tmp_path / "study" / "submitit").rglob("*_log.*"))
    assert "Requeued job" in err, err


def test_submitit_settings_fill_one_process_per_job_and_refuse_contradictions():
    params, extra = submitit_settings("submitit-local", {}, None, None, None)
    assert params == {"gpus_per_node": 1, "tasks_per_node": 1, "timeout_min": LOCAL_TIMEOUT_MIN} and extra == []
    params, extra = submitit_settings("slurm", {"timeout_min": 4320, "slurm_partition": "p"}, 8, 1, None)
    assert params["gpus_per_node"] == 8 and params["slurm_partition"] == "p"
    assert extra == ["--dist-url", "auto"]  # two jobs on one node must not share the default port
    assert submitit_settings("slurm", {"timeout_min": 60}, 8, None, "tcp://h:1")[1] == []
    with pytest.raises(ValueError, match="needs the cluster's time limit"):
        submitit_settings("slurm", {}, 8, None, None)
    with pytest.raises(ValueError, match="gpus_per_node=4.*must be 8"):
        submitit_settings("slurm", {"timeout_min": 1, "gpus_per_node": 4}, 8, None, None)
    with pytest.raises(ValueError, match="--num-machines 2"):
        submitit_settings("slurm", {"timeout_min": 1}, 8, 2, None)
    with pytest.raises(ValueError, match="launchers are"):
        submitit_settings("local", {}, None, None, None)
    assert os.environ.get("SUBMITIT_EXECUTOR") is None  # nothing leaked into this process


def test_slurm_jobs_ask_for_one_process_with_the_gpus_and_the_time_limit(tmp_path, monkeypatch):
    # A machine without SLURM: said in one line.
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ValueError, match="--launcher slurm: .*srun"):
        SubmititLauncher(str(tmp_path / "study"), "slurm", {"timeout_min": 60})
    # SLURM's commands, faked: sbatch answers with a job id, sacct knows nothing yet.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", "echo Submitted batch job 4242"), ("sacct", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    params, _ = submitit_settings("slurm", {"timeout_min": 4320, "slurm_partition": "learnfair"}, 8, None, None)
    launcher = SubmititLauncher(str(tmp_path / "study"), "slurm", params)
    outcome = launcher.run([job(tmp_path, "cell")], log=lambda m: None)
    assert outcome["cell"] == outcome["cell"].__class__("submitted", "job 4242")
    record = json.loads((tmp_path / "study" / JOBS_FILE).read_text())["cell"]
    assert record["job_id"] == "4242" and record["cluster"] == "slurm"
    (script,) = (tmp_path / "study" / "submitit").rglob("*submission.sh")
    text = script.read_text()
    for line in ("--gpus-per-node=8", "--ntasks-per-node=1", "--time=4320", "--partition=learnfair", "--signal=USR2"):
        assert line in text, line
