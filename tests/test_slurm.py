"""litlab-train on a real SLURM cluster (two nodes on this machine, see tests/slurm_cluster.py):
sweeps, DDP across nodes, preemption, time limits, a rank dying on its node, Optuna, and the
errors."""

import csv
import functools
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, cli_command, need_data, read_metrics, run_cli
from events import held, hold
from omegaconf import OmegaConf

from litlab.run.checkpoints import load_checkpoint

pytestmark = pytest.mark.slurm

# What a job may ask of a node without GPUs (each has one of this machine's CPUs): two such jobs
# run at once, one on each node.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=10",
]
# A job of a few seconds: 20 batches of an MLP, 2 validation and test batches.
TINY = [
    "experiment=mlp_relu",
    "debug=limit",
    "trainer.max_epochs=1",
    "callbacks.rich_progress_bar=null",
    f"paths.data_dir={DATA_DIR}",
]
# A step of RUN's second epoch on 2 ranks (4,000 images, 2,000 a rank in batches of 64: 32 steps
# an epoch): tests hold a job there (tests/events.py) to interrupt it mid-run.
MID_EPOCH_1 = 40
# One job as 2 ranks, one on each node.
TWO_NODES = [*SLURM, "hydra.launcher.nodes=2", "trainer=ddp_cpu"]
# Deterministic, with dropout, three epochs of a few seconds: a job to interrupt.
RUN = [
    "experiment=mlp_relu",
    "data.labelled=4000",
    "model.net.dropout=0.2",
    "trainer.max_epochs=3",
    "+trainer.limit_test_batches=20",
    "trainer.deterministic=true",
    "callbacks.rich_progress_bar=null",
    f"paths.data_dir={DATA_DIR}",
]


@pytest.fixture
def cluster(slurm, monkeypatch):
    """The session's cluster, found by every client (and litlab-train) through SLURM_CONF."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    return slurm


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def slurm_id(job_dir: Path) -> str:
    """The SLURM job (array task) that ran a job of a sweep, as Hydra recorded it."""
    return str(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def queued(sweep: Path) -> str | None:
    """The SLURM id of a one-job sweep's job, once submitit has queued it."""
    folders = (sweep / ".submitit").glob("*")
    return next((p.name for p in folders if p.is_dir()), None)


def job_log(sweep: Path, job_id: str) -> str:
    """Everything the SLURM job's tasks wrote, over all of its runs."""
    return "".join(p.read_text() for p in sorted((sweep / ".submitit").glob(f"{job_id}/*_log.*")))


def show_job(cluster, job_id: str) -> dict[str, str]:
    fields = cluster.run("scontrol", "show", "job", job_id).split()
    return dict(field.split("=", 1) for field in fields if "=" in field)


def requeued(cluster, job_id: str) -> bool:
    """Whether SLURM holds the job again, its last run's processes gone: squeue shows a job
    still COMPLETING while scontrol already says PENDING, and starting it then races them."""
    state = cluster.run("squeue", "--noheader", "--format=%T|%r", f"--jobs={job_id}")
    return state.strip() == "PENDING|BeginTime"  # SLURM holds a requeued job a while


def wait_for(condition, *processes: subprocess.Popen, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        for process in processes:
            assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def sweep_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*cli_command("litlab-train"), "-m", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,  # where the jobs find tests/events.py
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def assert_one_run(job_dir: Path, epochs: int) -> None:
    """The job directory holds one run: its logs go on across restarts, each epoch once."""
    rows = list(csv.DictReader((job_dir / "csv" / "metrics.csv").open()))
    assert sorted(int(r["epoch"]) for r in rows if r["val/acc"]) == list(range(epochs))
    assert (job_dir / "train.log").read_text().count("run directory:") == 1


def test_a_2_job_sweep_runs_as_2_slurm_jobs_that_the_report_ranks(cluster, tmp_path, mnist):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "litlab-train",
        "-m",
        *SLURM,
        *TINY,
        "model.optimizer.lr=0.01,0.1",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sacct" not in result.stdout + result.stderr  # no accounting here, and no warnings
    jobs = job_dirs(sweep)
    assert [job.name for job in jobs] == ["0", "1"]
    ids = [slurm_id(job) for job in jobs]
    assert len(set(ids)) == 2
    for job, job_id in zip(jobs, ids, strict=True):
        done = lambda job_id=job_id: show_job(cluster, job_id)["JobState"] == "COMPLETED"  # noqa: E731
        wait_for(done, timeout=60)
        assert OmegaConf.load(job / "config.yaml").paths.output_dir == str(job.resolve())
        assert "test/acc" in read_metrics(job)
    report = run_cli("litlab-report", str(sweep))
    assert report.returncode == 0, report.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    best = [float(row["val/acc_best"]) for row in rows]
    assert len(rows) == 2 and best == sorted(best, reverse=True)
    assert {row["model.optimizer.lr"] for row in rows} == {"0.01", "0.1"}


def local_ddp(*args: str, run_dir: Path) -> subprocess.Popen:
    """`trainer=ddp_cpu` as 2 processes on this machine, uninterrupted: bitwise what a 2-node
    job computes, with a thread per rank as the job's tasks have (cpus_per_task=1)."""
    overrides = ["trainer=ddp_cpu", f"paths.log_dir={run_dir.parent / 'logs'}"]
    return subprocess.Popen(
        [*cli_command("litlab-train"), *args, *overrides, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """RUN as 2 ranks, uninterrupted, started now (alongside the first test that asks for it):
    its final metrics, once it has ended."""
    need_data("MNIST")
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    whole = local_ddp(*RUN, run_dir=run_dir)

    @functools.cache
    def metrics() -> dict:
        _, stderr = whole.communicate(timeout=300)
        assert whole.returncode == 0, stderr[-3000:]
        return read_metrics(run_dir)

    yield metrics
    whole.kill()


def rank_process(job_id: str, rank: int) -> tuple[int, str] | None:
    """The pid and node of the process of rank `rank` of a running SLURM job (whose nodes are
    all on this machine), once it has started."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # not a process, or one that ended
            continue
        env = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)
        task = Path(command[0].decode()).name.startswith("python")  # not srun, which starts it
        ours = env.get("SLURM_JOB_ID") == job_id and env.get("SLURM_PROCID") == str(rank)
        if task and ours and b"submitit.core._submit" in command:
            return int(proc.name), env["SLURMD_NODENAME"]
    return None


def test_a_2_node_job_requeued_mid_epoch_resumes_to_the_metrics_of_an_uninterrupted_run(
    cluster, tmp_path, whole_run
):
    sweep, reached = tmp_path / "sweep", tmp_path / "reached"
    job = sweep_process(*TWO_NODES, *RUN, *hold(MID_EPOCH_1, reached), f"hydra.sweep.dir={sweep}")
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    try:
        job_id = wait_for(lambda: queued(sweep), job)
        wait_for(lambda: held(reached), job)  # epoch 0 is saved: preempt epoch 1
        cluster.run("scontrol", "requeue", job_id)
        wait_for(lambda: requeued(cluster, job_id), job)
        assert load_checkpoint(last)["epoch"] < 2  # preempted mid-run
        cluster.run("scontrol", "update", f"jobid={job_id}", "StartTime=now")
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0, stderr[-3000:]
    assert show_job(cluster, job_id)["Restarts"] == "1"
    log = job_log(sweep, job_id)
    assert "DUE TO JOB REQUEUE" in log or "Received SIGTERM" in log
    assert f"resuming from {last}" in log
    assert "MEMBER: 2/2" in log
    assert read_metrics(sweep / "0") == whole_run()  # bitwise
    assert_one_run(sweep / "0", epochs=3)


def test_a_rank_killed_on_the_second_node_ends_the_job_and_the_rerun_sweep_resumes_it(
    cluster, tmp_path, whole_run
):
    sweep, reached, killed = tmp_path / "sweep", tmp_path / "reached", tmp_path / "killed"
    # The same command continues the job (its resumed run does not hold).
    command = [*TWO_NODES, *RUN, *hold(MID_EPOCH_1, reached, killed), f"hydra.sweep.dir={sweep}"]
    job = sweep_process(*command)
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    try:
        job_id = wait_for(lambda: queued(sweep), job)
        wait_for(lambda: held(reached), job)  # epoch 0 is saved: kill rank 1 in epoch 1
        pid, node = wait_for(lambda: rank_process(job_id, rank=1), job)
        os.kill(pid, signal.SIGKILL)
        killed.touch()  # rank 0 goes on, and finds rank 1 gone
        _, stderr = job.communicate(timeout=300)  # the job ends, its submitter with it
    finally:
        job.kill()
    assert node == show_job(cluster, job_id)["NodeList"].split(",")[1]  # the second node
    log = sweep / ".submitit" / job_id / f"{job_id}_0_log.err"
    failed = subprocess.CompletedProcess(job.args, job.returncode, "", stderr)
    assert_one_line_error(failed, f"task 1 on node {node}: Killed", f"its log: {log}")
    assert show_job(cluster, job_id)["JobState"] == "FAILED"
    assert load_checkpoint(last)["epoch"] < 2 and not (sweep / "0" / "metrics.json").exists()

    again = run_cli("litlab-train", "-m", *command, "resume=auto_or_fresh")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {last}" in job_log(sweep, slurm_id(sweep / "0"))
    assert read_metrics(sweep / "0") == whole_run()  # bitwise
    assert_one_run(sweep / "0", epochs=3)


# Per data set: a short deterministic run, and the batch sizes of each of 2 ranks and of 1
# process (a limit on batches is per rank: evaluation too reads the same samples in both).
DDP = {
    "mnist": (
        ["experiment=mlp_relu", "data.labelled=1000", "trainer.max_epochs=2"],
        ["data.batch_size=16"],
        ["data.batch_size=32"],
    ),
    "text": (
        [
            "data=rotten_tomatoes",
            "model=lstm",
            "optimizer=adam",
            "data.bucketing=false",  # one global batch is the two ranks' halves of it
            "data.max_len=32",
            "debug=limit",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=10",
        ],
        ["data.batch_size=16", "data.eval_batch_size=128"],
        ["data.batch_size=32", "data.eval_batch_size=256"],
    ),
}


@pytest.mark.parametrize("data", DDP)
def test_ddp_in_a_slurm_job_on_2_nodes_matches_1_process_on_the_same_global_batch(
    cluster, tmp_path, mnist, data
):
    run, per_rank, one_process = DDP[data]
    common = [
        *run,
        "trainer.deterministic=true",
        "callbacks.rich_progress_bar=null",
        f"paths.data_dir={DATA_DIR}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "trainer=ddp_cpu",
    ]
    sweep = tmp_path / "sweep"
    job = sweep_process(*TWO_NODES, *per_rank, *common, f"hydra.sweep.dir={sweep}")
    # One process on the whole batch, under the DDP strategy so that it shuffles as DDP does.
    one = run_cli(
        "litlab-train",
        *common,
        "trainer.devices=1",
        *one_process,
        f"hydra.run.dir={tmp_path / 'one'}",
    )
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    job_id = slurm_id(sweep / "0")
    log = job_log(sweep, job_id)
    # Lightning took the ranks from SLURM: one job, a task on each of the two nodes.
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log
    assert "node=0(2)" in log and "node=1(2)" in log
    job = show_job(cluster, job_id)
    assert (job["NumNodes"], job["NumTasks"]) == ("2", "2")
    assert sorted(job["NodeList"].split(",")) == sorted(cluster.nodes)
    expected = read_metrics(tmp_path / "one")
    assert read_metrics(sweep / "0").keys() == expected.keys()
    for key, value in read_metrics(sweep / "0").items():
        assert value == pytest.approx(expected[key], abs=1e-3), key
    # Both ranks wrote into the job's one run directory; rank 1 started no run of its own.
    assert not (tmp_path / "logs").exists()
    assert sorted(p.name for p in (sweep / "0" / "csv").iterdir()) == [
        "hparams.yaml",
        "metrics.csv",
    ]
    assert (sweep / "0" / "train.log").read_text().count("run directory:") == 1


def test_a_2_node_job_at_its_time_limit_is_signalled_requeued_and_finishes_with_the_same_metrics(
    cluster, tmp_path, whole_run
):
    sweep, reached = tmp_path / "sweep", tmp_path / "reached"
    # SLURM sends SIGUSR2 signal_delay_s before a job's time limit, at the first of its checks
    # (every 30 s) after that. Once the job holds mid-run (submitit's handler in place), its
    # limit is cut to 2 minutes from its start: the signal is due already, so it comes at the
    # next check, while the job still holds.
    limit = ["hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=119"]
    job = sweep_process(
        *TWO_NODES, *limit, *RUN, *hold(MID_EPOCH_1, reached), f"hydra.sweep.dir={sweep}"
    )
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    try:
        job_id = wait_for(lambda: queued(sweep), job)
        wait_for(lambda: held(reached), job)
        cluster.run("scontrol", "update", f"jobid={job_id}", "TimeLimit=2")
        wait_for(lambda: show_job(cluster, job_id)["Restarts"] == "1", job)  # it requeued itself
        wait_for(lambda: requeued(cluster, job_id), job)
        assert not (sweep / "0" / "metrics.json").exists()  # signalled mid-run
        # Start the rerun now rather than after SLURM's requeue delay, with time to finish.
        cluster.run("scontrol", "update", f"jobid={job_id}", "StartTime=now", "TimeLimit=10")
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0, stderr[-3000:]
    log = job_log(sweep, job_id)
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log
    assert "Requeued job" in log and "MEMBER: 2/2" in log
    assert f"resuming from {last}" in log
    assert read_metrics(sweep / "0") == whole_run()  # bitwise
    assert_one_run(sweep / "0", epochs=3)


def test_an_optuna_search_whose_submitter_was_killed_continues_its_study_when_rerun(
    cluster, tmp_path, mnist
):
    sweep = tmp_path / "search"
    search = [
        "hparams_search=mnist_optuna",  # the study in <sweep>/optuna.journal
        *SLURM,
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    ]
    first = sweep_process(*search)
    try:  # kill the submitting process once its 2 trials run on the cluster
        wait_for(lambda: all((sweep / str(n) / ".hydra").is_dir() for n in (0, 1)), first)
    finally:
        first.kill()
        first.wait()
    # The jobs go on without it (as squeue shows a user); the rerun finds what they reached.
    wait_for(lambda: all((sweep / str(n) / "metrics.json").is_file() for n in (0, 1)))
    again = run_cli("litlab-train", *search)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [t.name for t in job_dirs(sweep)] == ["0", "1", "2", "3"]  # none reused
    study = optuna_study(sweep)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    for trial in study.trials:  # trial N's job is the directory N
        assert trial.value == pytest.approx(read_metrics(sweep / str(trial.number))["val/acc_best"])
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == pytest.approx(max(t.value for t in study.trials))


def optuna_study(sweep: Path, study_name: str = "train", storage: str | None = None):
    import optuna

    from litlab.sweeps.storage import open_storage

    storage = open_storage(storage or f"{sweep}/optuna.journal")
    return optuna.load_study(study_name=study_name, storage=storage)


def assert_one_line_error(result, *fragments):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_sweep_where_sbatch_is_missing_stops_before_any_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(cli_command("litlab-train")[0]).parent))  # no SLURM
    sweep = tmp_path / "sweep"
    result = run_cli("litlab-train", "-m", *SLURM, *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert_one_line_error(result, "sbatch", "hydra/launcher=submitit_local")
    assert not sweep.exists()


def test_a_sweep_whose_controller_does_not_answer_stops_before_any_directory(
    tmp_path, monkeypatch, slurm
):
    from slurm_cluster import free_port, write_conf

    conf = write_conf(tmp_path, controller_port=free_port(), node_ports=[free_port()])
    monkeypatch.setenv("SLURM_CONF", str(conf))  # a controller nobody runs
    sweep = tmp_path / "sweep"
    result = run_cli("litlab-train", "-m", *SLURM, *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert_one_line_error(result, "controller does not answer", "Unable to contact", "sinfo")
    assert not sweep.exists()


def test_an_unknown_partition_is_refused_with_the_partitions_sinfo_lists(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "litlab-train",
        "-m",
        *SLURM,
        "hydra.launcher.partition=gpu",
        *TINY,
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    )
    assert_one_line_error(result, "partition=gpu", "sinfo lists debug")
    assert not sweep.exists()


def test_more_nodes_than_the_partition_has_are_refused_with_its_nodes(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "litlab-train",
        "-m",
        *SLURM,
        "hydra.launcher.nodes=3",
        "trainer=ddp_cpu",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    )
    nodes = ", ".join(sorted(cluster.nodes))
    assert_one_line_error(result, "hydra.launcher.nodes=3", f"debug has 2 ({nodes})")
    assert not sweep.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [  # litlab's own error in the job; an exception Lightning raises in it
        (["paths.data_dir={empty}"], "MNIST not found"),
        (["trainer=ddp_cpu", "trainer.devices=2"], "does not match. HINT: Set `devices=1`"),
    ],
    ids=["no-data-on-the-node", "devices-not-the-tasks"],
)
def test_a_job_that_fails_on_the_cluster_names_its_log_file(cluster, tmp_path, overrides, message):
    sweep = tmp_path / "sweep"
    empty = tmp_path / "empty"
    empty.mkdir()  # what a node sees where the data was not copied to it
    overrides = [o.format(empty=empty) for o in overrides]
    result = run_cli("litlab-train", "-m", *SLURM, *TINY, *overrides, f"hydra.sweep.dir={sweep}")
    job_id = slurm_id(sweep / "0")
    log = sweep / ".submitit" / job_id / f"{job_id}_0_log.err"
    assert_one_line_error(result, message, f"its log: {log}")
    assert message in log.read_text()
