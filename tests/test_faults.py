"""When the machine fails a run, with real faults: a disk that fills up mid-run, Ctrl-C and
SIGTERM sent to a training process, a memory limit a run exceeds. Each ends in one line and a
nonzero exit, leaves the files before it whole, and a resume ends with exactly the metrics of an
uninterrupted run.

A run is held at a known batch by tests/helpers/fault_points.py, which tells the test it is
there; the test then does its harm and lets it go on. Mounting a tmpfs and making a memory
cgroup need root."""

import csv
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, cli_command, read_metrics
from test_resume import wait_for

from litlab.run.checkpoints import load_checkpoint

HELPERS = Path(__file__).parent / "helpers"
RUN = [
    "experiment=mlp_relu",
    "data.labelled=2000",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=8",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "trainer.deterministic=true",
    "callbacks.rich_progress_bar=null",
    f"paths.data_dir={DATA_DIR}",
]

# The runs here name the tests' own callbacks (fault_points), which a run from elsewhere may
# not: these are the tests' own runs.
TRUSTED = "trust_run=true"


def env() -> dict:
    path = os.pathsep.join(filter(None, [str(HELPERS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": path}


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*cli_command("litlab-train"), *args],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> dict:
    """The metrics of the run uninterrupted."""
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    done = train(*RUN, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    return read_metrics(run_dir)


class Held:
    """A run of RUN held at `epoch` after `batch` batches (epoch=test: when testing starts)."""

    def __init__(self, folder: Path, run_dir: Path, epoch, batch: int = 3, *more: str):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        pause = [
            "+callbacks.pause._target_=fault_points.PauseAt",
            f"+callbacks.pause.folder={folder}",
            f"+callbacks.pause.epoch={epoch}",
            f"+callbacks.pause.batch={batch}",
        ]
        self.process = subprocess.Popen(
            [*cli_command("litlab-train"), *RUN, *pause, *more, f"hydra.run.dir={run_dir}"],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def reached(self) -> int:
        """Wait until the run is held; its process id."""
        reached = self.folder / "reached"
        wait_for(lambda: reached.is_file() and reached.read_text(), self.process)
        return int(reached.read_text())

    def go(self) -> tuple[int, str]:
        """Let it go on; its exit status and its stderr."""
        (self.folder / "go").touch()
        _, stderr = self.process.communicate(timeout=600)
        return self.process.returncode, stderr


def resumes_to(run_dir: Path, whole: dict) -> None:
    """`resume=auto` continues the run to exactly the metrics of the uninterrupted one."""
    resumed = train("resume=auto", f"hydra.run.dir={run_dir}", TRUSTED)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_metrics(run_dir) == whole


def last_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.strip()][-1]


@contextmanager
def tmpfs(folder: Path, size_mb: int):
    """A tmpfs of `size_mb` mounted on `folder`, for the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not let root mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # a test's open study


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of `folder` up to `leave` bytes free."""
    import shutil

    filler = folder / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * max(shutil.disk_usage(folder).free - leave, 0))
    return filler


def intact(run_dir: Path, epoch: int) -> None:
    """The run's files before the fault are whole: its last.ckpt of `epoch`, its CSV log, no
    half-written file."""
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == epoch
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert 0 in {int(row["epoch"]) for row in rows if row["val/acc"]}
    assert not list(run_dir.rglob("*.partial"))


def test_a_disk_full_at_a_checkpoint_is_one_line_and_a_resume_ends_as_the_whole_run(
    tmp_path, whole
):
    with tmpfs(tmp_path / "disk", 20) as disk:
        run_dir = disk / "run"
        held = Held(tmp_path / "held", run_dir, epoch=1)
        held.reached()
        filler = fill(disk, leave=64 * 1024)  # room for the logs, not for a checkpoint
        status, stderr = held.go()
        line = last_line(stderr)
        assert status == 2
        assert line.startswith(f"error: could not write {run_dir}/checkpoints/epoch_001.ckpt: ")
        assert "No space left on device (" in line and " free there); " in line
        assert f"{run_dir}/checkpoints/last.ckpt from epoch 0 is kept" in line
        assert line.endswith(f"continue with: litlab-train resume=auto hydra.run.dir={run_dir}")
        intact(run_dir, epoch=0)

        filler.unlink()
        resumes_to(run_dir, whole)


def test_a_disk_full_at_the_metrics_is_one_line_and_a_resume_ends_as_the_whole_run(tmp_path, whole):
    with tmpfs(tmp_path / "disk", 20) as disk:
        run_dir = disk / "run"
        held = Held(tmp_path / "held", run_dir, "test")
        held.reached()
        filler = fill(disk, leave=0)
        status, stderr = held.go()
        line = last_line(stderr)
        assert status == 2
        assert line.startswith(f"error: could not write {run_dir}/"), line
        assert "No space left on device (0 B free there); " in line
        assert f"{run_dir}/checkpoints/last.ckpt from epoch 1 is kept" in line
        assert not (run_dir / "metrics.json").exists()
        intact(run_dir, epoch=1)

        filler.unlink()
        resumes_to(run_dir, whole)


def continued(run_dir: Path) -> str:
    return f"continue with: litlab-train resume=auto hydra.run.dir={run_dir}"


def test_sigterm_saves_the_cut_epoch_exits_143_and_a_resume_ends_as_the_whole_run(tmp_path, whole):
    run_dir = tmp_path / "run"
    held = Held(tmp_path / "held", run_dir, epoch=1, batch=3)
    os.kill(held.reached(), signal.SIGTERM)
    status, stderr = held.go()
    assert status == 143
    assert last_line(stderr) == (
        f"stopped by SIGTERM in epoch 1 after 3 batches; {run_dir}/checkpoints/last.ckpt from "
        f"epoch 0 is kept (the cut epoch is in {run_dir}/checkpoints/interrupted.ckpt); "
        + continued(run_dir)
    )
    intact(run_dir, epoch=0)
    cut = load_checkpoint(run_dir / "checkpoints" / "interrupted.ckpt")
    assert (cut["epoch"], cut["global_step"]) == (1, 8 + 3)

    resumes_to(run_dir, whole)
    assert not (run_dir / "checkpoints" / "interrupted.ckpt").exists()  # trained again


def test_ctrl_c_stops_after_the_batch_exits_130_and_a_resume_ends_as_the_whole_run(tmp_path, whole):
    run_dir = tmp_path / "run"
    held = Held(tmp_path / "held", run_dir, epoch=1, batch=5)
    os.kill(held.reached(), signal.SIGINT)
    status, stderr = held.go()
    assert status == 130
    assert last_line(stderr) == (
        f"stopped by Ctrl-C in epoch 1 after 5 batches; {run_dir}/checkpoints/last.ckpt from "
        f"epoch 0 is kept (the cut epoch is in {run_dir}/checkpoints/interrupted.ckpt); "
        + continued(run_dir)
    )
    intact(run_dir, epoch=0)

    resumes_to(run_dir, whole)


def test_a_second_ctrl_c_stops_at_once(tmp_path, whole):
    run_dir = tmp_path / "run"
    held = Held(tmp_path / "held", run_dir, epoch=1, batch=2)
    pid = held.reached()
    os.kill(pid, signal.SIGINT)
    log = run_dir / "train.log"  # Lightning notes the stop it was asked for there
    wait_for(lambda: "Received SIGTERM" in log.read_text(), held.process)
    os.kill(pid, signal.SIGINT)  # while the run is still held: it never gets to go on
    _, stderr = held.process.communicate(timeout=600)
    assert held.process.returncode == 130
    assert last_line(stderr) == (
        f"stopped by Ctrl-C at once, in epoch 1 after 2 batches; {run_dir}/checkpoints/last.ckpt "
        f"from epoch 0 is kept; " + continued(run_dir)
    )
    assert not (run_dir / "checkpoints" / "interrupted.ckpt").exists()
    intact(run_dir, epoch=0)

    (held.folder / "go").touch()  # the resumed run is not held
    resumes_to(run_dir, whole)


@contextmanager
def memory_limit(limit: int):
    """A memory cgroup limited to `limit` bytes (cgroup v2, else v1's memory controller); the
    file that moves a process into it."""
    if os.geteuid() != 0:
        pytest.skip("making a memory cgroup needs root")
    root = Path("/sys/fs/cgroup")
    controllers = root / "cgroup.controllers"
    name = f"litlab-test-{os.getpid()}"
    if controllers.is_file() and "memory" in controllers.read_text().split():
        group, limit_file = root / name, "memory.max"
        subtree = root / "cgroup.subtree_control"
        if "memory" not in subtree.read_text().split():
            subtree.write_text("+memory")
    elif (root / "memory" / "cgroup.procs").is_file():
        group, limit_file = root / "memory" / name, "memory.limit_in_bytes"
    else:
        pytest.skip("this machine has no cgroup memory controller (v2 or v1) to limit a run with")
    try:
        group.mkdir()
        (group / limit_file).write_text(str(limit))
    except OSError as err:
        pytest.skip(f"this machine does not let root make a memory cgroup: {err}")
    try:
        yield group / "cgroup.procs"
    finally:
        group.rmdir()  # its processes have ended


def test_a_sweep_killed_out_of_memory_is_one_line_shown_by_the_report_and_resumes(tmp_path, whole):
    sweep = tmp_path / "sweep"
    grow = [
        "+callbacks.pause._target_=fault_points.PauseAt",
        f"+callbacks.pause.folder={tmp_path / 'held'}",
        "+callbacks.pause.epoch=1",
        "+callbacks.pause.batch=3",
        "+callbacks.pause.allocate_mb=4096",  # twice the limit, in epoch 1
    ]
    (tmp_path / "held").mkdir()
    command = [*cli_command("litlab-train"), "-m", *RUN, *grow, f"hydra.sweep.dir={sweep}"]
    with memory_limit(2 * 2**30) as procs:
        killed = subprocess.run(
            command,
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=lambda: procs.write_text(str(os.getpid())),
        )
    assert killed.returncode == 137
    line = last_line(killed.stderr)
    job = sweep / "0"
    assert line.startswith(
        f"error: {job} was killed by signal 9 (SIGKILL), likely out of memory (peak memory "
    )
    assert f"{job}/checkpoints/last.ckpt from epoch 0 is kept; continue with: litlab-train" in line
    assert line.endswith(f" resume=auto_or_fresh hydra.sweep.dir={sweep}")
    assert f"error: {line.removeprefix('error: ')}" in (job / "train.log").read_text()
    intact(job, epoch=0)

    report = subprocess.run(
        [*cli_command("litlab-report"), str(sweep), "--trust-run"],
        env=env(),
        capture_output=True,
        text=True,
    )
    assert report.returncode == 2  # no job to rank: it says why
    assert report.stderr.startswith(
        "error: no job has finished: job 0 killed, likely out of memory (peak "
    )

    again = subprocess.run(
        [*command, "resume=auto_or_fresh", TRUSTED],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_metrics(job) == whole
    assert not (job / "killed.json").exists()


def test_a_disk_full_at_a_study_is_one_line_and_the_search_goes_on_from_it(tmp_path):
    import optuna

    with tmpfs(tmp_path / "disk", 20) as disk:
        sweep = disk / "search"
        search = [
            "hparams_search=mnist_optuna",
            "hydra.sweeper.n_trials=1",
            "hydra.sweeper.pruner=median",  # the job writes to the study after each epoch
            # SQLite: each write takes a new page of the disk (the journal's appends may fit
            # in the page its file has)
            f"hydra.sweeper.storage=sqlite:///{sweep / 'optuna.db'}",
            *RUN,
            f"hydra.sweep.dir={sweep}",
        ]
        (tmp_path / "held").mkdir()
        pause = [
            "+callbacks.pause._target_=fault_points.PauseAt",
            f"+callbacks.pause.folder={tmp_path / 'held'}",
            "+callbacks.pause.epoch=1",
            "+callbacks.pause.batch=3",
        ]
        process = subprocess.Popen(
            [*cli_command("litlab-train"), *search, *pause],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        reached = tmp_path / "held" / "reached"
        wait_for(lambda: reached.is_file() and reached.read_text(), process)
        filler = fill(disk, leave=0)
        (tmp_path / "held" / "go").touch()
        _, stderr = process.communicate(timeout=600)
        line = last_line(stderr)
        assert process.returncode == 2
        database = sweep / "optuna.db"
        assert line.startswith(f"error: could not write {database}: database or disk is full (")
        assert "; the study keeps the trials told so far; make room, then continue with: " in line
        assert line.endswith(f"resume=auto_or_fresh hydra.sweep.dir={sweep}")
        intact(sweep / "0", epoch=0)
        study = optuna.load_study(study_name="train", storage=f"sqlite:///{database}")
        assert list(study.trials[0].intermediate_values) == [1]  # epoch 0, as reported

        filler.unlink()
        again = subprocess.run(
            [*cli_command("litlab-train"), *search, TRUSTED],
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        study = optuna.load_study(study_name="train", storage=f"sqlite:///{database}")
        states = [t.state.name for t in study.trials]
        # Job 0's end could not be written on the full disk (no error.txt): its trial stays
        # open for a heartbeat or another submitter to tell, and the search goes on past it.
        assert states in (["FAIL", "COMPLETE"], ["RUNNING", "COMPLETE"]), states


def test_a_fresh_run_is_refused_pictures_that_do_not_fit_in_its_memory(tmp_path):
    from PIL import Image

    for name in ("a", "b"):  # 200 small pictures, 11.4 MiB each once decoded at 2000 x 2000
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(100):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "pics" / name / f"{i}.png")
    command = [
        *cli_command("litlab-train"),
        "data=image_folder",
        f"data.root={tmp_path / 'pics'}",
        "data.num_classes=2",
        "data.channels=3",
        "data.image_size=2000",
        "model=cnn",
        "model.net.channels=[4,4]",  # a net that is small even for such pictures
        "model.net.hidden=[]",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    with memory_limit(3 * 2**29) as procs:  # 1.5 GiB
        refused = subprocess.run(
            command,
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=lambda: procs.write_text(str(os.getpid())),
        )
    assert refused.returncode == 2
    line = last_line(refused.stderr)
    assert line.startswith(
        f"error: the 200 pictures of {tmp_path / 'pics'}, decoded (3 x 2000 x 2000 bytes "
        "each), take 2.2 GiB in memory, more than the "
    )
    assert line.endswith("set a smaller data.image_size, or train on fewer pictures")
    assert not (tmp_path / "run").exists()


def test_the_report_ranks_the_finished_jobs_and_shows_a_killed_one_as_killed(tmp_path, capsys):
    import json

    from omegaconf import OmegaConf

    from litlab.cli.report import main as report_main
    from litlab.run.supervisor import record_killed

    for name, lr in (("0", "0.1"), ("1", "0.01")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        overrides = OmegaConf.to_yaml([f"model.optimizer.lr={lr}"])
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(overrides)
    (tmp_path / "0" / "metrics.json").write_text(json.dumps({"metrics": {"val/acc_best": 0.9}}))
    record_killed(tmp_path / "1", 9, True, 3 * 2**29, "killed")  # as litlab-train's parent does
    report_main([str(tmp_path)])
    assert "killed, likely out of memory" in capsys.readouterr().out  # in the table
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    statuses = [(row["job"], row["status"]) for row in rows]
    assert statuses == [("0", "finished"), ("1", "killed, likely out of memory (peak 1.5 GiB)")]
