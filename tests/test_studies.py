"""litlab's Optuna search (litlab.sweeps.studies): Hydra's sweep grammar, pruning, trials that start
as soon as a slot frees, a search continued after its submitter was killed, and bad searches."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import DATA_DIR, cli_command, read_metrics, run_cli
from events import hold
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from litlab.sweeps.report import make_report
from litlab.sweeps.studies import search_space

# A job of a few seconds: 20 batches of an MLP per epoch, 2 validation and test batches.
TINY = [
    "experiment=mlp_relu",
    "debug=limit",
    "callbacks.rich_progress_bar=null",
    f"paths.data_dir={DATA_DIR}",
]


def study_of(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name="train", storage=f"sqlite:///{sweep}/optuna.db")


def validated_epochs(job: Path) -> list[int]:
    rows = csv.DictReader((job / "csv" / "metrics.csv").open())
    return sorted(int(row["epoch"]) for row in rows if row["val/acc"])


def test_hydras_sweep_grammar_becomes_optuna_distributions():
    space, fixed = search_space(
        [
            "model.optimizer.lr=tag(log, interval(0.0001, 0.1))",
            "data.batch_size=choice(32, 64, 128)",
            "model.net.activation=choice(relu, tanh)",
            "trainer.max_epochs=range(1, 8, 3)",  # 1, 4, 7: the stop is left out, as in Hydra
            "model.net.dropout=interval(0, 0.5)",
            "model.net.hidden=tag(int, interval(16, 64))",
            "seed=3",
        ]
    )
    assert space == {
        "model.optimizer.lr": FloatDistribution(0.0001, 0.1, log=True),
        "data.batch_size": CategoricalDistribution([32, 64, 128]),
        "model.net.activation": CategoricalDistribution(["relu", "tanh"]),
        "trainer.max_epochs": IntDistribution(1, 7, step=3),
        "model.net.dropout": FloatDistribution(0, 0.5),
        "model.net.hidden": IntDistribution(16, 64),
    }
    assert fixed == ["seed=3"]


def test_a_pruned_trial_ends_early_keeps_its_run_and_stays_pruned_when_resumed(tmp_path, mnist):
    sweep = tmp_path / "search"
    sweep.mkdir()
    # The study so far: two trials far ahead at every epoch (median needs 2 to compare with).
    study = optuna.create_study(
        study_name="train", storage=f"sqlite:///{sweep}/optuna.db", direction="maximize"
    )
    for _ in range(2):
        ahead = {epochs: 0.999 for epochs in range(1, 5)}
        study.add_trial(optuna.trial.create_trial(value=0.999, intermediate_values=ahead))
    result = run_cli(
        "litlab-train",
        "hparams_search=mnist_optuna",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.n_trials=1",
        *TINY,
        "trainer.max_epochs=4",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    job = sweep / "2"  # trial 2's job
    assert validated_epochs(job) == [0]  # stopped after its first epoch, not an error
    summary = json.loads((job / "metrics.json").read_text())
    assert summary["pruned"] is True
    assert summary["metrics"]["val/acc_best"] < 0.999 and "test/acc" in summary["metrics"]
    assert (job / summary["best_checkpoint"]).is_file()
    assert (job / "checkpoints" / "last.ckpt").is_file()
    trial = study_of(sweep).trials[2]
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: summary["metrics"]["val/acc_best"]}  # 1 epoch
    report = make_report(sweep)  # listed as pruned, not ranked with the finished trials
    assert [(job.name, job.status) for job in report.jobs] == [("2", "pruned")]
    assert list(csv.DictReader(report.csv.open()))[0]["status"] == "pruned"

    kept = {p: p.read_bytes() for p in [job / "metrics.json", *job.glob("checkpoints/*")]}
    resumed = run_cli("litlab-train", "resume=auto", f"hydra.run.dir={job}", TINY[-1])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {p: p.read_bytes() for p in kept} == kept  # not trained further
    assert validated_epochs(job) == [0]
    assert study_of(sweep).trials[2].state == TrialState.PRUNED


def job_times(job: Path) -> tuple[float, float]:
    """When a job started (Hydra writes its .hydra/config.yaml first) and ended (metrics.json)."""
    return (job / ".hydra" / "config.yaml").stat().st_mtime, (job / "metrics.json").stat().st_mtime


def test_with_two_workers_a_trial_starts_as_soon_as_one_ends_while_another_runs(tmp_path, mnist):
    sweep = tmp_path / "search"
    # The 2-epoch trial holds at its second epoch until trial 2 has started (Hydra writes a
    # job's .hydra/config.yaml first): it is still running then, however fast or loaded the
    # machine. Were trial 2 to wait for both (in batches), the hold gives up after 2 minutes.
    trial_2 = sweep / "2" / ".hydra" / "config.yaml"
    result = run_cli(
        "litlab-train",
        "hparams_search=mnist_optuna",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=3",
        "seed=1",  # the sampler's: trials 0 and 1 draw 1 and 2 epochs
        "trainer.max_epochs=choice(1, 2)",
        *TINY,
        *hold(20, tmp_path / "reached", until=trial_2, give_up_s=120),  # 20 batches an epoch
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [len(validated_epochs(sweep / str(n))) for n in range(3)]
    assert sorted(epochs[:2]) == [1, 2], epochs
    short, long = sorted((job_times(sweep / str(n)) for n in (0, 1)), key=lambda t: t[1])
    started, _ = job_times(sweep / "2")
    assert short[1] <= started < long[1]  # in the slot the short trial freed, the long one on
    assert [t.state for t in study_of(sweep).trials] == [TrialState.COMPLETE] * 3


def test_a_pruning_search_whose_submitter_was_killed_continues_from_its_storage(tmp_path, mnist):
    sweep, killed = tmp_path / "search", tmp_path / "killed"
    search = [
        "hparams_search=mnist_optuna",
        "hydra/launcher=submitit_local",  # jobs in processes of their own, as on a cluster
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner=median",
        *TINY,
        "trainer.max_epochs=3",
        # Each trial holds at its second epoch until the submitter is killed: they outlive it.
        *hold(20, tmp_path / "reached", until=killed),
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    command = [*cli_command("litlab-train"), *search]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:  # kill the submitting process once its 2 trials run
        deadline = time.monotonic() + 300
        while not all((sweep / str(n) / ".hydra").is_dir() for n in (0, 1)):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed.touch()
    # The jobs go on without it, and report each epoch to the study through its storage.
    deadline = time.monotonic() + 300
    while not all((sweep / str(n) / "metrics.json").is_file() for n in (0, 1)):
        assert time.monotonic() < deadline, "the jobs of the killed submitter did not finish"
        time.sleep(0.1)
    again = run_cli("litlab-train", *search)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    trials = study_of(sweep).trials
    for trial in trials:  # trial N's job is the directory N, and says how it ended
        job = sweep / str(trial.number)
        summary = json.loads((job / "metrics.json").read_text())
        pruned = summary.get("pruned", False)
        assert trial.state == (TrialState.PRUNED if pruned else TrialState.COMPLETE)
        assert trial.value == pytest.approx(read_metrics(job)["val/acc_best"])
        assert sorted(trial.intermediate_values) == [e + 1 for e in validated_epochs(job)]
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2  # none to compare with


def assert_one_line_error(result, *fragments):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_an_unknown_pruner_is_one_error_line_and_writes_nothing(tmp_path):
    result = run_cli(
        "litlab-train",
        "hparams_search=mnist_optuna",
        "hydra.sweeper.pruner=medain",
        *TINY,
        f"paths.log_dir={tmp_path}",
    )
    assert_one_line_error(result, "pruner=medain", "median, successive_halving, hyperband, or null")
    assert list(tmp_path.iterdir()) == []


def test_a_storage_that_cannot_be_written_is_one_error_line_and_writes_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    storage = f"sqlite:///{tmp_path}/notes.txt/optuna.db"
    result = run_cli(
        "litlab-train",
        "hparams_search=mnist_optuna",
        f"hydra.sweeper.storage={storage}",
        *TINY,
        f"paths.log_dir={tmp_path}",
    )
    assert_one_line_error(result, storage, "cannot write")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "a file, not a folder"
