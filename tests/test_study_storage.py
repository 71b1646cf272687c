"""Where a search keeps its study (litlab.sweeps.storage): on a real PostgreSQL server shared by
two submitters and the jobs of a real two-node SLURM cluster, a killed job's trial failed by its
heartbeat and tried again, a SQLite sweep moved to the journal, optuna-dashboard in a real
headless Chromium, and the storages that are refused."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import DATA_DIR, cli_command, run_cli
from omegaconf import OmegaConf
from optuna.trial import TrialState
from test_slurm import wait_for

from litlab.sweeps.storage import check_storage, open_storage

# A job of a few seconds: 20 batches of an MLP per epoch, 2 validation and test batches.
TINY = [
    "experiment=mlp_relu",
    "debug=limit",
    "callbacks.rich_progress_bar=null",
    f"paths.data_dir={DATA_DIR}",
]
# Each job a SLURM job with one of a node's CPUs: two run at once, one on each node.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=10",
]
PARAMS = ("model.optimizer.lr", "data.batch_size")  # what hparams_search=mnist_optuna searches


def submitter(*args: str) -> subprocess.Popen:
    """A search's submitting process, as a user starts it."""
    return subprocess.Popen(
        [*cli_command("litlab-train"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def finish(process: subprocess.Popen) -> str:
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return err


def job_dirs(sweep: Path) -> list[str]:
    return sorted((p.name for p in sweep.iterdir() if p.name.isdigit()), key=int)


def job_params(job: Path) -> dict:
    config = OmegaConf.load(job / "config.yaml")
    return {key: OmegaConf.select(config, key) for key in PARAMS}


def ran(job: Path) -> tuple[float, float]:
    """When a job started (Hydra writes its .hydra/config.yaml first) and ended (metrics.json)."""
    return (job / ".hydra" / "config.yaml").stat().st_mtime, (job / "metrics.json").stat().st_mtime


def slurm_node(cluster, job: Path) -> str:
    job_id = str(OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.job.id)
    fields = cluster.run("scontrol", "show", "job", job_id).split()
    return dict(field.split("=", 1) for field in fields if "=" in field)["NodeList"]


@pytest.fixture
def cluster(slurm, monkeypatch):
    """The session's two-node cluster, found by litlab-train through SLURM_CONF, once both of
    its nodes are idle (an earlier test's jobs gone)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    states = lambda: slurm.run("sinfo", "--noheader", "--Node", "--format=%t").split()  # noqa: E731
    wait_for(lambda: states() == ["idle"] * len(slurm.nodes), timeout=120)
    return slurm


@pytest.fixture(params=["journal", "postgresql"])
def shared_storage(request, tmp_path) -> str:
    """The sweep's own journal (the default), or a database on a real PostgreSQL server."""
    if request.param == "journal":
        return f"{tmp_path}/search/optuna.journal"
    return request.getfixturevalue("postgres").url


@pytest.mark.slurm
def test_two_submitters_share_a_study_whose_trials_run_on_both_nodes(
    cluster, shared_storage, tmp_path, mnist
):
    sweep = tmp_path / "search"
    search = [
        "hparams_search=mnist_optuna",
        *SLURM,
        f"hydra.sweeper.storage={shared_storage}",
        "hydra.sweeper.study_name=widened",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner=median",  # every job reports each epoch to the server
        *TINY,
        "trainer.max_epochs=2",
        f"hydra.sweep.dir={sweep}",
    ]
    first = submitter(*search)
    try:  # the second joins once the first one's trials run, as a user widens a search
        wait_for(lambda: all((sweep / n / ".hydra").is_dir() for n in "01"), first)
        second = submitter(*search)
        try:
            finish(second)
        finally:
            second.kill()
        finish(first)
    finally:
        first.kill()

    study = optuna.load_study(study_name="widened", storage=open_storage(shared_storage))
    trials = study.get_trials()
    assert len(trials) == 2 * 2  # each submitter runs its n_trials (README)
    assert [t.number for t in trials] == [0, 1, 2, 3]  # no number twice
    assert job_dirs(sweep) == ["0", "1", "2", "3"]  # trial N's job is <sweep>/N, none reused
    for trial in trials:  # no finished trial lost: each as its job ended, with its reports
        job = sweep / str(trial.number)
        summary = json.loads((job / "metrics.json").read_text())
        pruned = summary.get("pruned", False)
        assert trial.state == (TrialState.PRUNED if pruned else TrialState.COMPLETE)
        if not pruned:
            assert trial.value == pytest.approx(summary["metrics"]["val/acc_best"])
        assert trial.intermediate_values and max(trial.intermediate_values) <= 2
        assert job_params(job) == pytest.approx(trial.params)
    # The first submitter's two trials ran at once, one on each node.
    (start0, end0), (start1, end1) = ran(sweep / "0"), ran(sweep / "1")
    assert max(start0, start1) < min(end0, end1)
    assert {slurm_node(cluster, sweep / n) for n in "01"} == set(cluster.nodes)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == pytest.approx(study.best_value)


def heartbeats(storage, trial_id: int) -> bool:
    """Whether the trial's job has recorded a heartbeat."""
    import sqlalchemy

    with storage.engine.connect() as connection:
        query = "SELECT count(*) FROM trial_heartbeats WHERE trial_id = :id"
        return connection.execute(sqlalchemy.text(query), {"id": trial_id}).scalar() > 0


@pytest.mark.slurm
def test_a_job_killed_mid_trial_is_failed_by_its_heartbeat_and_its_trial_tried_again(
    cluster, postgres, tmp_path, mnist
):
    sweep = tmp_path / "search"
    search = [
        "hparams_search=mnist_optuna",
        *SLURM,
        f"hydra.sweeper.storage={postgres.url}",
        "hydra.sweeper.study_name=beats",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        "hydra.sweeper.n_trials=1",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    ]
    storage = open_storage(postgres.url, heartbeat_interval=1, grace_period=3)
    first = submitter(*search, "trainer.max_epochs=1000")  # a job that ends only when killed
    try:  # once the job beats and has trained an epoch, its node "fails": submitter and job go
        wait_for(lambda: (sweep / "0" / "checkpoints" / "last.ckpt").is_file(), first)
        study = optuna.load_study(study_name="beats", storage=storage)
        wait_for(lambda: heartbeats(storage, study.trials[0]._trial_id), first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    job_id = str(OmegaConf.load(sweep / "0" / ".hydra" / "hydra.yaml").hydra.job.id)
    cluster.run("scancel", "--signal=KILL", "--full", job_id)
    assert study.trials[0].state == TrialState.RUNNING  # no one has told it
    # Stale once grace_period has passed since its last beat, by the server's clock (Optuna's
    # own test of staleness, which a submitter's next ask runs).
    study_id = storage.get_study_id_from_name("beats")
    wait_for(lambda: storage._get_stale_trial_ids(study_id), timeout=60)

    again = run_cli("litlab-train", *search, "trainer.max_epochs=1")  # rerun: its one trial
    assert again.returncode == 0, again.stderr[-3000:]
    failed, retried = study.get_trials()
    assert failed.state == TrialState.FAIL and not (sweep / "0" / "metrics.json").exists()
    assert retried.state == TrialState.COMPLETE
    assert retried.params == failed.params  # the killed trial, tried again as trial 1
    assert retried.system_attrs["failed_trial"] == 0
    assert job_params(sweep / "1") == pytest.approx(failed.params)
    said = "trial 0's job stopped beating: failed; its parameters are tried again"
    assert said in again.stdout + again.stderr


def assert_one_line_error(result, *fragments):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        (["hydra.sweeper.storage=/proc/litlab/optuna.journal"], ["cannot write", "/proc"]),
        (
            ["hydra.sweeper.storage=postgresql://litlab@127.0.0.1:{port}/studies"],
            ["cannot reach the database", "Connection refused", "start the server"],
        ),
        (["hydra.sweeper.storage=postgres://litlab@localhost/studies"], ["postgresql://"]),
        (["hydra.sweeper.storage=redis://localhost:6379"], ["redis:// is not a storage"]),
        (["hydra.sweeper.storage=42"], ["storage=42", "a journal file path"]),
        (["hydra.sweeper.heartbeat_interval=60"], ["needs a database storage"]),
        (
            ["hydra.sweeper.storage=sqlite:///{tmp}/o.db", "hydra.sweeper.heartbeat_interval=0"],
            ["heartbeat_interval=0", "whole number >= 1"],
        ),
        (
            [
                "hydra.sweeper.storage=sqlite:///{tmp}/o.db",
                "hydra.sweeper.heartbeat_interval=10",
                "hydra.sweeper.grace_period=5",
            ],
            ["grace_period=5 must be longer"],
        ),
    ],
    ids=[
        "under-proc",
        "no-server",
        "postgres-scheme",
        "other-scheme",
        "not-a-path",
        "heartbeat-on-a-journal",
        "heartbeat-zero",
        "grace-shorter",
    ],
)
def test_a_storage_that_cannot_hold_the_study_is_one_error_line_and_writes_nothing(
    tmp_path, settings, fragments
):
    logs = tmp_path / "logs"
    settings = [s.format(port=closed_port(), tmp=tmp_path) for s in settings]
    result = run_cli(
        "litlab-train", "hparams_search=mnist_optuna", *settings, *TINY, f"paths.log_dir={logs}"
    )
    assert_one_line_error(result, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def sqlite_study(sweep: Path) -> optuna.Study:
    """A study as litlab kept it before the journal: in <sweep>/optuna.db, 2 trials ended."""
    sweep.mkdir()
    study = optuna.create_study(
        study_name="train", storage=f"sqlite:///{sweep}/optuna.db", direction="maximize"
    )
    lr = optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
    for value, rate in ((0.91, 0.01), (0.87, 0.003)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"model.optimizer.lr": rate},
                distributions={"model.optimizer.lr": lr},
                value=value,
                intermediate_values={1: value - 0.1, 2: value},
            )
        )
    return study


def test_a_sqlite_sweep_is_refused_until_moved_to_its_journal_which_keeps_its_trials(tmp_path):
    sweep = tmp_path / "search"
    old = sqlite_study(sweep)
    rerun = run_cli(
        "litlab-train", "hparams_search=mnist_optuna", *TINY, f"hydra.sweep.dir={sweep}"
    )
    assert_one_line_error(rerun, "optuna.db", "python -m litlab.sweeps.storage")
    assert sorted(p.name for p in sweep.iterdir()) == ["optuna.db"]

    moved = subprocess.run(
        [sys.executable, "-m", "litlab.sweeps.storage", str(sweep)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert moved.returncode == 0, moved.stderr
    assert f"copied train from {sweep / 'optuna.db'} to {sweep / 'optuna.journal'}" in moved.stdout
    check_storage(str(sweep / "optuna.journal"))  # the rerun is no longer refused
    new = optuna.load_study(study_name="train", storage=open_storage(f"{sweep}/optuna.journal"))
    fields = lambda t: (t.number, t.state, t.value, t.params, t.intermediate_values)  # noqa: E731
    assert [fields(t) for t in new.trials] == [fields(t) for t in old.trials]

    twice = subprocess.run(
        [sys.executable, "-m", "litlab.sweeps.storage", str(sweep)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert twice.returncode == 2 and twice.stderr.startswith("error: ")
    assert "already holds the study train" in twice.stderr
    assert len(new.trials) == 2  # nothing copied twice


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory) -> Path:
    """A real search of 2 trials on the default storage, its journal in the sweep."""
    sweep = tmp_path_factory.mktemp("dashboard") / "search"
    result = run_cli(
        "litlab-train",
        "hparams_search=mnist_optuna",
        "hydra.sweeper.n_trials=2",
        *TINY,
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


def chromium() -> tuple[str, str]:
    """Debian's Chromium and its chromedriver, or a skip that says how to get them."""
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed: `make chromium` "
            "installs them (apt-get, as root)"
        )
    return browser, driver


def test_optuna_dashboard_shows_a_finished_sweeps_study_in_headless_chromium(
    finished_search, mnist
):
    browser, driver = chromium()
    pytest.importorskip("optuna_dashboard", reason="pip install 'litlab[dashboard]'")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install 'litlab[dashboard]'")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = closed_port()
    journal = finished_search / "optuna.journal"
    dashboard = subprocess.Popen(  # the README's command
        [str(Path(sys.executable).parent / "optuna-dashboard"), str(journal), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    page = None
    try:

        def answers() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(answers, dashboard, timeout=60)
        page = webdriver.Chrome(service=webdriver.ChromeService(driver), options=options)
        page.get(f"http://127.0.0.1:{port}/dashboard")
        body = lambda: page.find_element(By.TAG_NAME, "body").text  # noqa: E731
        WebDriverWait(page, 60).until(lambda _: "train" in body())  # the study, by its name
        study_id = open_storage(str(journal)).get_study_id_from_name("train")
        page.get(f"http://127.0.0.1:{port}/dashboard/studies/{study_id}/trials")
        WebDriverWait(page, 60).until(lambda _: "Trials" in body())
        seen = body()
        assert f"{len(job_dirs(finished_search))} Trials" in seen  # 2, the search's jobs
        best = json.loads((finished_search / "0" / "metrics.json").read_text())
        assert "Trial 0" in seen and "Trial 1" in seen
        assert str(best["metrics"]["val/acc_best"]) in seen  # trial 0's value, shown first
    finally:
        if page is not None:
            page.quit()
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_a_sqlite_sweep_moves_to_a_postgresql_server(tmp_path, postgres):
    sweep = tmp_path / "search"
    old = sqlite_study(sweep)
    moved = subprocess.run(
        [sys.executable, "-m", "litlab.sweeps.storage", str(sweep), "--to", postgres.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert moved.returncode == 0, moved.stderr
    assert f"continue the search with hydra.sweeper.storage={postgres.url}" in moved.stdout
    new = optuna.load_study(study_name="train", storage=open_storage(postgres.url))
    fields = lambda t: (t.number, t.state, t.value, t.params, t.intermediate_values)  # noqa: E731
    assert [fields(t) for t in new.trials] == [fields(t) for t in old.trials]
    assert sorted(p.name for p in sweep.iterdir()) == ["optuna.db"]  # kept, nothing added
