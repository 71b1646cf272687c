"""litlab on SLURM: the launcher behind `hydra/launcher=slurm`.

It is hydra-submitit-launcher's, with what a user needs when a cluster is not as expected: the
cluster is asked before anything is queued or written (sbatch there, the controller answering,
the partition one it has, with as many nodes as a job asks for), a job that fails names its log
file (and the node where a rank died), and on a cluster that keeps no accounting (where `sacct`
cannot answer and submitit warns at every poll) the jobs' states come from `squeue` instead.
"""

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf
from submitit.core.utils import FailedJobError, JobPaths, UncompletedJobError
from submitit.slurm import slurm

from litlab.errors import LitlabError, first_line, user_errors
from litlab.files import human_size
from litlab.run.supervisor import record_killed
from litlab.sweeps.jobs import JobFailed

_CLIENT_TIMEOUT_S = 60  # a controller that does not answer makes clients retry for a while


def _client(*command: str) -> str:
    """A SLURM client's output; a controller that does not answer is the user's to fix."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_CLIENT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise LitlabError(
            f"the SLURM controller did not answer `{' '.join(command)}` in {_CLIENT_TIMEOUT_S} s; "
            "check that `sinfo` works here (SLURM_CONF names the cluster's slurm.conf)"
        ) from err
    if done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise LitlabError(
            f"the SLURM controller does not answer ({command[0]}: {reason}); check that `sinfo` "
            "works here (SLURM_CONF names the cluster's slurm.conf)"
        )
    return done.stdout


def _partition_nodes() -> tuple[dict[str, list[str]], str | None]:
    """The cluster's partitions with their nodes (as `sinfo` lists them), and the default one."""
    nodes: dict[str, list[str]] = {}
    default = None
    for line in _client("sinfo", "--noheader", "--Node", "--format=%P|%N").split():
        partition, node = line.split("|")
        if partition.endswith("*"):
            partition = default = partition.removesuffix("*")
        nodes.setdefault(partition, []).append(node)
    return {name: sorted(set(names)) for name, names in nodes.items()}, default


def check_cluster(partition: str | None, nodes: int = 1) -> bool:
    """Refuse a sweep this cluster cannot run; returns whether the cluster keeps accounting."""
    if shutil.which("sbatch") is None:
        raise LitlabError(
            "hydra/launcher=slurm queues jobs with sbatch, which is not on PATH here; sweep from "
            "a machine of the cluster (or load its slurm module), or run the jobs on this "
            "machine with hydra/launcher=submitit_local"
        )
    partitions, default = _partition_nodes()
    asked = [name for name in (partition or default or "").split(",") if name]
    for name in asked:
        if name not in partitions:
            raise LitlabError(
                f"hydra.launcher.partition={name} is not a partition of this cluster; "
                f"sinfo lists {', '.join(sorted(partitions))}"
            )
    if asked and nodes > max(len(partitions[name]) for name in asked):
        has = "; ".join(
            f"{name} has {len(partitions[name])} ({', '.join(partitions[name])})" for name in asked
        )
        raise LitlabError(
            f"hydra.launcher.nodes={nodes} asks for more nodes than the partition has: {has}; "
            "ask for fewer nodes, or another partition (hydra.launcher.partition)"
        )
    config = _client("scontrol", "show", "config")
    return "accounting_storage/none" not in config


# The states squeue shows for a job that is over. It also shows passing ones that submitit does
# not know as such (SIGNALING while a time-limit signal goes out, STAGE_OUT, ...): those are
# the job still in SLURM's hands.
_ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
_ENDED |= {"OUT_OF_MEMORY", "ENDED"}


class QueueWatcher(slurm.SlurmInfoWatcher):
    """Job states from `squeue`, for clusters without accounting. A job squeue no longer knows
    has ended (SLURM forgets a finished job after MinJobAge, 300 s by default)."""

    def update(self) -> None:
        self._num_calls += 1
        for job_id in {x.split("_")[0] for x in self._registered - self._finished}:
            listed = subprocess.run(
                ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N"]
                + [f"--jobs={job_id}"],
                capture_output=True,
                text=True,
                check=False,
            )
            if listed.returncode != 0 and "Invalid job id" not in listed.stderr:
                continue  # no answer this time: ask again at the next poll
            states = self.read_info("JobID|State|NodeList\n" + listed.stdout)
            known = [key for key in self._registered if key.split("_")[0] == job_id]
            for key in known:
                state = states.get(key, {"State": "ENDED"})["State"]
                self._info_dict[key] = {"State": state if state in _ENDED else "RUNNING"}
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)


_watching = threading.Lock()
_launches = 0  # launches in progress: an Optuna search launches each trial from its own thread
_watcher_before: slurm.SlurmInfoWatcher | None = None


@contextmanager
def _watched_by(watcher: slurm.SlurmInfoWatcher):
    """Let submitit's SLURM jobs ask `watcher` for their states during a launch (all of its
    jobs share the class's). Of launches in progress at once, the first one's watches all of
    their jobs, until the last one ends."""
    global _launches, _watcher_before
    with _watching:
        if _launches == 0:
            _watcher_before, slurm.SlurmJob.watcher = slurm.SlurmJob.watcher, watcher
        _launches += 1
    try:
        yield
    finally:
        with _watching:
            _launches -= 1
            if _launches == 0:
                slurm.SlurmJob.watcher = _watcher_before


def _log_file(params: dict, job_id: str) -> Path:
    """The log (stderr) of the first task of SLURM job `job_id`, as submitit names it."""
    folder = Path(params["submitit_folder"].replace("%j", job_id))
    return JobPaths(folder, job_id=job_id, task_id=0).stderr


def _last_error(log: Path) -> str:
    """The `error:` line a job's log ends with (litlab's own errors), else its last line."""
    if not log.is_file():
        return "it wrote no log"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    return (errors or lines or ["its log is empty"])[-1]


def _use_allotted_cpus() -> None:
    """Compute on the CPUs SLURM allots a task (cpus_per_task), not on every core of its node,
    which the node's other tasks and jobs share (Lightning would give each rank its share of all
    the node's cores)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and "OMP_NUM_THREADS" not in os.environ:
        import torch

        os.environ["OMP_NUM_THREADS"] = cpus  # also what Lightning looks at
        torch.set_num_threads(int(cpus))


# The line each run of a job (a requeued job runs again) starts its log with, from its script.
_RUN_STARTS = "litlab: SLURM job"
_RUN_LINE = (
    f'echo "{_RUN_STARTS} $SLURM_JOB_ID on $SLURM_JOB_NODELIST,'
    ' restart ${SLURM_RESTART_COUNT:-0}" >&2'
)
# What srun writes into a job's log when a signal ends one of its tasks ("srun: error: vm: task
# 1: Killed"); a task that exits by itself says why in its own log ("Exited with exit code 2").
_DEAD_TASK = re.compile(r"^srun: error: (\S+): (tasks? [\d,-]+): (?!Exited)(.+)$", re.MULTILINE)


def _dead_task(log: Path) -> str | None:
    """The task that a signal ended first in the job's last run, with its node and the signal,
    as srun reported it in the job's log; None when none was."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    found = _DEAD_TASK.findall(text.rsplit(_RUN_STARTS, 1)[-1])
    return "{1} on node {0}: {2}".format(*found[0]) if found else None


def _peak_memory(job_id: str) -> int | None:
    """A job's largest resident memory of any step, in bytes, as SLURM's accounting has it."""
    listed = subprocess.run(
        ["sacct", "--jobs", job_id, "--noheader", "--parsable2", "--format=MaxRSS"],
        capture_output=True,
        text=True,
        check=False,
    )
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    sizes = [
        int(float(number) * units[unit])
        for number, unit in re.findall(r"^([\d.]+)([KMGT]?)$", listed.stdout, re.MULTILINE)
    ]
    return max(sizes, default=None) or None


def _killed(job_id: str, sweep: str, accounting: bool) -> str:
    """How a job the kernel (or SLURM) killed ended, in words; written into its run directory,
    which litlab-report reads (litlab.run.supervisor.record_killed)."""
    peak = _peak_memory(job_id) if accounting else None
    words = "was killed, likely out of memory" + (
        f" (peak memory {human_size(peak)})" if peak else ""
    )
    for hydra_file in Path(sweep).glob("*/.hydra/hydra.yaml"):
        if str(OmegaConf.load(hydra_file).hydra.job.id) == job_id:
            record_killed(hydra_file.parent.parent, None, True, peak, f"SLURM job {job_id} {words}")
    return words


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def __init__(self, **params) -> None:
        super().__init__(**params)
        # A job whose rank died cannot go on: end its other ranks at once rather than leave them
        # waiting on the dead one in a collective call (NCCL waits for many minutes).
        self.params.setdefault("srun_args", ["--kill-on-bad-exit=1"])
        self.params["setup"] = [_RUN_LINE, *(self.params.get("setup") or [])]

    def setup(self, **kwargs) -> None:
        with user_errors():
            self.accounting = check_cluster(self.params.get("partition"), self.params["nodes"])
        super().setup(**kwargs)

    def __call__(self, *args, **kwargs) -> JobReturn:
        """One job, on the cluster: Hydra keeps a job's exception for the submitting process;
        write it into the job's log too, where the error line points."""
        _use_allotted_cpus()
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED:
            traceback.print_exception(ret._return_value, file=sys.stderr)
        return ret

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        watcher = slurm.SlurmJob.watcher if self.accounting else QueueWatcher(delay_s=60)
        with user_errors(), _watched_by(watcher):
            try:
                returns = super().launch(job_overrides, initial_job_idx)
            except (UncompletedJobError, FailedJobError) as err:
                # submitit names a task's result or log file: <folder>/<job>_<task>_...
                log = Path(re.search(r"(\S+)_(?:result\.pkl|log\.err)", str(err))[1] + "_log.err")
                job_id = log.name.rsplit("_", 2)[0]
                # A rank killed on its node (out of memory, a node failing) leaves no result;
                # srun says which in the job's log, where the others' errors only follow from it.
                job_log = _log_file(self.params, job_id)
                dead = _dead_task(job_log)
                sweep = self.config.hydra.sweep.dir
                if dead or "OUT_OF_MEMORY" in str(err):
                    how = "failed"
                    if "OUT_OF_MEMORY" in str(err) or re.search(r"Killed|Out Of Memory", dead):
                        how = _killed(job_id, sweep, self.accounting)
                    raise LitlabError(
                        f"SLURM job {job_id} {how}: its {dead or 'state is OUT_OF_MEMORY'}; its "
                        f"log: {job_log}; to continue it from its last checkpoint, rerun the "
                        f"sweep with resume=auto_or_fresh hydra.sweep.dir={sweep}"
                    ) from err
                raise LitlabError(
                    f"SLURM job {job_id} ended without a result: {_last_error(log)}; its log: {log}"
                ) from err
            for ret in returns:
                if ret.status == JobStatus.FAILED:
                    log = _log_file(self.params, str(ret.hydra_cfg.hydra.job.id))
                    error = ret._return_value
                    reason = (
                        error.reason
                        if isinstance(error, JobFailed)  # litlab's line for it
                        else f"{type(error).__name__}: {first_line(error)}"
                    )
                    raise LitlabError(
                        f"job {ret.hydra_cfg.hydra.job.num} failed on the cluster ({reason}); "
                        f"its log: {log}"
                    )
        return returns
