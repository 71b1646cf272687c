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
from litlab.sweeps.space import search_space
from litlab.sweeps.storage import open_storage

# A job of a few seconds: 20 batches of an MLP per epoch, 2 validation and test batches.
TINY = [
    "experiment=mlp_relu",
    "debug=limit",
    "callbacks.rich_progress_bar=null",
    f"paths.data_dir={DATA_DIR}",
]


def study_of(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name="train", storage=open_storage(f"{sweep}/optuna.journal"))


def validated_epochs(job: Path) -> list[int]:
    rows = csv.DictReader((job / "csv" / "metrics.csv").open())
    return sorted(int(row["epoch"]) for row in rows if row["val/acc"])


def test_hydras_sweep_grammar_becomes_optuna_distributions():
    space = search_space(
        {"data.batch_size": "choice(32, 64, 128)", "seed": "range(1, 3)"},
        [
            "model.optimizer.lr=tag(log, interval(0.0001, 0.1))",
            "model.net.activation=choice(relu, tanh)",
            "trainer.max_epochs=range(1, 7, 3)",  # 1, 4, 7: the stop included
            "model.net.dropout=interval(0, 0.5)",
            "model.net.hidden.0=int(interval(16, 64))",
            "model.net.hidden.1=tag(int, interval(16, 64))",
            "data.val_size=shuffle(range(1000, 3000, 1000))",
            "seed=3",  # fixed: out of the search space
            "~logger",
        ],
    )
    shuffled = space.distributions.pop("data.val_size")  # Hydra's range: the stop left out
    assert sorted(shuffled.choices) == [1000, 2000]
    assert space.distributions == {
        "data.batch_size": CategoricalDistribution([32, 64, 128]),
        "model.optimizer.lr": FloatDistribution(0.0001, 0.1, log=True),
        "model.net.activation": CategoricalDistribution(["relu", "tanh"]),
        "trainer.max_epochs": IntDistribution(1, 7, step=3),
        "model.net.dropout": FloatDistribution(0, 0.5),
        "model.net.hidden.0": IntDistribution(16, 64),
        "model.net.hidden.1": IntDistribution(16, 64),
    }
    assert space.fixed == {"seed": "3"}
    overrides = space.job_overrides({"data.batch_size": 64})
    assert overrides == ["data.batch_size=64", "seed=3", "~logger"]


def test_a_pruned_trial_ends_early_keeps_its_run_and_stays_pruned_when_resumed(tmp_path, mnist):
    sweep = tmp_path / "search"
    sweep.mkdir()
    # The study so far: two trials far ahead at every epoch (median needs 2 to compare with).
    study = optuna.create_study(
        study_name="train", storage=open_storage(f"{sweep}/optuna.journal"), direction="maximize"
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
        "seed=0",  # the sampler's: trials 0 and 1 draw 1 and 2 epochs
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


def test_a_study_named_by_no_one_is_continued_by_a_rerun_and_a_second_one_is_refused(tmp_path):
    from litlab.errors import LitlabError
    from litlab.sweeps.studies import OptunaSweeper

    storage = f"sqlite:///{tmp_path}/optuna.db"

    def sweeper(study_name=None):
        return OptunaSweeper(None, "maximize", storage, study_name, n_trials=1, n_jobs=1)

    first = sweeper().open_study(["maximize"])
    first.add_trial(optuna.trial.create_trial(value=0.5))
    again = sweeper().open_study(["maximize"])  # the rerun: the same study, its trial 1 next
    assert again.study_name == first.study_name and len(again.trials) == 1
    with pytest.raises(LitlabError, match="directions"):
        sweeper().open_study(["maximize", "minimize"])
    sweeper("another").open_study(["maximize"])
    with pytest.raises(LitlabError, match="name the one to continue with hydra.sweeper.study_name"):
        sweeper().open_study(["maximize"])


def test_max_failure_rate_judges_batches_of_n_jobs_trials_in_the_order_they_end():
    from litlab.sweeps.studies import Failures

    failed = RuntimeError("boom")
    half = Failures(rate=0.5, batch=2)  # as the plugin: more than half of a batch stops it
    for number, error in enumerate([None, failed, failed, None]):
        half.ended(number, error, last=number == 3)
    assert not half.too_many  # 1 of 2 failed in each batch
    half.ended(4, failed, last=False)
    half.ended(5, failed, last=False)
    assert half.too_many and half.verdict().startswith("2 of 2 trials failed")
    one_at_a_time = Failures(rate=0.5, batch=1)  # n_jobs=1: each trial is its own batch
    one_at_a_time.ended(0, failed, last=False)
    assert one_at_a_time.too_many and "trial 0: RuntimeError: boom" in one_at_a_time.verdict()
    never = Failures(rate=1.0, batch=1)
    never.ended(0, failed, last=True)
    assert not never.too_many


def test_a_failed_trial_is_told_by_its_error_line():
    from litlab.cli import user_errors
    from litlab.errors import LitlabError
    from litlab.sweeps.studies import failure_line

    with pytest.raises(SystemExit) as ended, user_errors():  # how a job ends on a refusal
        raise LitlabError("optimized_metric=val/accuracy is not logged by Classifier")
    assert failure_line(ended.value) == (
        "error: optimized_metric=val/accuracy is not logged by Classifier"
    )
    remote = RuntimeError("job 12 failed\nTraceback ...\nerror: data.data_dir=/x holds no MNIST")
    assert failure_line(remote) == "error: data.data_dir=/x holds no MNIST"  # submitit's text
    assert failure_line(ValueError("a\nb is wrong")) == "ValueError: b is wrong"
