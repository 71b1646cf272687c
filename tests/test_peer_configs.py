"""hydra-optuna-sweeper's documented searches, and lightning-hydra-template's, run by litlab's
Optuna sweeper on MNIST: the plugin's example search (its config's range and choice, and the
`int(interval(...))` of its docs), its multi-objective example, its custom search space example,
a key fixed on the command line, `range` with its stop, and the template's `mnist_optuna.yaml`
with only its model keys renamed. Each checks what every job ran with (its own config.yaml) and
what the search wrote. Then every bad sweeper setting, refused before anything is written."""

import csv
import textwrap
from pathlib import Path

import pytest
from conftest import DATA_DIR, read_summary, run_cli
from omegaconf import OmegaConf

from litlab.sweeps.report import make_report

# Jobs of a second or two: 3 batches of an MLP, 1 validation and test batch.
TINY = [
    "experiment=mlp_relu",
    "debug=limit",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.run_pictures=null",
    f"paths.data_dir={DATA_DIR}",
]


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))


def search(tmp_path: Path, *args: str, cwd: Path | None = None) -> Path:
    sweep = tmp_path / "search"
    options = ["-m", *(arg for arg in args if arg.startswith("--"))]  # before the overrides
    overrides = [arg for arg in args if not arg.startswith("--")]
    result = run_cli(
        "litlab-train", *options, *TINY, *overrides, f"hydra.sweep.dir={sweep}", cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


def jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def ran(job: Path, key: str):
    """What a job ran with: its own config's value at `key`."""
    return OmegaConf.select(OmegaConf.load(job / "config.yaml"), key)


def sampled(job: Path) -> dict[str, str]:
    """The overrides the sweeper gave a job."""
    return dict(o.split("=", 1) for o in OmegaConf.load(job / ".hydra" / "overrides.yaml"))


def metric(job: Path, name: str) -> float:
    return read_summary(job)["metrics"][name]


def test_the_plugins_example_search_with_its_docs_int_interval(tmp_path, mnist):
    # example/conf/config.yaml, on the MLP: minimize, a float range with a step and a choice
    write(
        tmp_path / "conf",
        "hparams_search/sphere.yaml",
        """\
        # @package _global_
        defaults:
          - override /hydra/sweeper: optuna
          - override /hydra/sweeper/sampler: tpe
        optimized_metric: val/loss
        hydra:
          sweeper:
            sampler:
              seed: 123
            direction: minimize
            study_name: sphere
            storage: null
            n_trials: 20
            n_jobs: 1
            max_failure_rate: 0.0
            params:
              model.net.dropout: range(0.0, 0.5, step=0.25)
              data.batch_size: choice(16, 32, 64)
        """,
    )
    sweep = search(
        tmp_path,
        f"--config-dir={tmp_path / 'conf'}",
        "hparams_search=sphere",
        "hydra.sweeper.n_trials=2",
        "model.net.hidden.0=int(interval(16.0, 64.0))",  # the docs' interval override
    )
    trials = jobs(sweep)
    assert [job.name for job in trials] == ["0", "1"]
    for job in trials:
        assert ran(job, "model.net.dropout") in (0.0, 0.25, 0.5)
        assert ran(job, "data.batch_size") in (16, 32, 64)
        hidden = ran(job, "model.net.hidden")[0]
        assert isinstance(hidden, int) and 16 <= hidden <= 64  # an integer, as int() says
        assert sampled(job)["model.net.hidden.0"] == str(hidden)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    losses = [metric(job, "val/loss") for job in trials]
    best = trials[losses.index(min(losses))]
    assert results.name == "optuna" and results.best_value == pytest.approx(min(losses))
    assert results.best_params == {
        "model.net.dropout": ran(best, "model.net.dropout"),
        "data.batch_size": ran(best, "data.batch_size"),
        "model.net.hidden.0": ran(best, "model.net.hidden")[0],
    }


def dominates(a: list[float], b: list[float], senses: list[int]) -> bool:
    better = [s * x >= s * y for x, y, s in zip(a, b, senses, strict=True)]
    return all(better) and a != b


def test_the_plugins_multi_objective_example_gives_the_pareto_front(tmp_path, mnist):
    # example/multi-objective-conf: NSGA-II over two ranges; here accuracy against size
    write(
        tmp_path / "conf",
        "hparams_search/multi_objective.yaml",
        """\
        # @package _global_
        defaults:
          - override /hydra/sweeper: optuna
          - override /hydra/sweeper/sampler: nsgaii
        optimized_metric: [val/acc_best, model/params]
        hydra:
          sweeper:
            sampler:
              seed: 123
            direction: [maximize, minimize]
            study_name: multi-objective
            storage: null
            n_trials: 20
            n_jobs: 1
            params:
              model.net.hidden.0: range(16, 64, step=16)
        """,
    )
    sweep = search(
        tmp_path,
        f"--config-dir={tmp_path / 'conf'}",
        "hparams_search=multi_objective",
        "hydra.sweeper.n_trials=3",
    )
    trials = jobs(sweep)
    assert len(trials) == 3
    values = {}
    for job in trials:
        hidden = ran(job, "model.net.hidden")
        assert hidden[0] in (16, 32, 48, 64) and hidden[1] == 128
        size = (784 + 1) * hidden[0] + (hidden[0] + 1) * 128 + (128 + 1) * 10
        assert metric(job, "model/params") == size  # what the job's net really holds
        values[int(job.name)] = [metric(job, "val/acc_best"), size]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.metrics == ["val/acc_best", "model/params"]
    front = {solution.trial: solution for solution in results.solutions}
    senses = [1, -1]  # maximize accuracy, minimize parameters
    for number, reached in values.items():
        beaten = any(dominates(other, reached, senses) for other in values.values())
        assert (number in front) == (not beaten), (number, values)
    for number, solution in front.items():
        assert list(solution["values"]) == pytest.approx(values[number])
        job = sweep / str(number)
        assert solution.params == {"model.net.hidden.0": ran(job, "model.net.hidden")[0]}
    report = make_report(sweep)  # litlab-report marks the front, and plots it
    assert report.front == {str(number) for number in front}
    rows = {row["job"]: row["status"] for row in csv.DictReader(report.csv.open())}
    assert {job for job, status in rows.items() if status == "pareto"} == report.front
    assert (sweep / "report_pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plugins_custom_search_space_example(tmp_path, mnist):
    # example/custom-search-space: a function in a file named with dashes, in the folder the
    # search runs in, samples a param bounded by one of `params`
    write(
        tmp_path,
        "custom-search-space-objective.py",
        """\
        def configure(cfg, trial):
            first = trial.params["model.net.hidden.0"]
            trial.suggest_int("model.net.hidden.1", first // 2, first)
        """,
    )
    write(
        tmp_path / "conf",
        "hparams_search/custom.yaml",
        """\
        # @package _global_
        defaults:
          - override /hydra/sweeper: optuna
        hydra:
          sweeper:
            sampler:
              seed: 123
            direction: maximize
            study_name: custom-search-space
            storage: null
            n_trials: 20
            n_jobs: 1
            params:
              model.net.hidden.0: choice(32, 64)
            custom_search_space: custom-search-space-objective.configure
        """,
    )
    sweep = search(
        tmp_path,
        f"--config-dir={tmp_path / 'conf'}",
        "hparams_search=custom",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=2",
        cwd=tmp_path,
    )
    for job in jobs(sweep):
        first, second = ran(job, "model.net.hidden")
        assert first in (32, 64) and first // 2 <= second <= first
        assert sampled(job)["model.net.hidden.1"] == str(second)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == {"model.net.hidden.0", "model.net.hidden.1"}


def test_a_fixed_key_leaves_the_search_and_range_includes_its_stop(tmp_path, mnist):
    write(
        tmp_path / "conf",
        "hparams_search/grid.yaml",
        """\
        # @package _global_
        defaults:
          - override /hydra/sweeper: optuna
          - override /hydra/sweeper/sampler: grid
        hydra:
          sweeper:
            direction: maximize
            storage: null
            n_trials: 10  # cut to the grid's 2 points
            params:
              data.batch_size: choice(32, 64)
              model.net.hidden.0: range(32, 64, 32)
        """,
    )
    sweep = search(
        tmp_path,
        f"--config-dir={tmp_path / 'conf'}",
        "hparams_search=grid",
        "data.batch_size=16",  # fixed: every job trains with 16, and it is not searched
    )
    trials = jobs(sweep)
    assert sorted(ran(job, "model.net.hidden")[0] for job in trials) == [32, 64]
    assert [ran(job, "data.batch_size") for job in trials] == [16, 16]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == {"model.net.hidden.0"}
    accuracies = [metric(job, "val/acc_best") for job in trials]
    assert results.best_value == pytest.approx(max(accuracies))


def test_lightning_hydra_templates_search_with_its_model_keys_renamed(tmp_path, mnist):
    conf = tmp_path / "conf"
    write(
        conf,
        "experiment/example.yaml",
        """\
        # @package _global_
        defaults:
          - override /data: mnist
          - override /model: mlp
        model:
          net:
            hidden: [64, 128, 64]
        """,
    )
    write(
        conf,
        "hparams_search/template_optuna.yaml",
        """\
        # @package _global_
        defaults:
          - override /hydra/sweeper: optuna
        optimized_metric: "val/acc_best"
        hydra:
          mode: "MULTIRUN"
          sweeper:
            _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper
            storage: null
            study_name: null
            n_jobs: 1
            direction: maximize
            n_trials: 20
            sampler:
              _target_: optuna.samplers.TPESampler
              seed: 1234
              n_startup_trials: 10
            params:
              model.optimizer.lr: interval(0.0001, 0.1)
              data.batch_size: choice(32, 64, 128, 256)
              model.net.hidden.0: choice(64, 128, 256)
              model.net.hidden.1: choice(64, 128, 256)
              model.net.hidden.2: choice(32, 64, 128, 256)
        """,
    )
    sweep = search(
        tmp_path,
        f"--config-dir={conf}",
        "hparams_search=template_optuna",
        "experiment=example",
        "hydra.sweeper.n_trials=2",
    )
    trials = jobs(sweep)
    assert len(trials) == 2
    for job in trials:
        hidden = ran(job, "model.net.hidden")
        assert hidden[0] in (64, 128, 256) and hidden[1] in (64, 128, 256)
        assert hidden[2] in (32, 64, 128, 256) and ran(job, "data.batch_size") in (32, 64, 128, 256)
        assert 0.0001 <= ran(job, "model.optimizer.lr") <= 0.1
        assert float(sampled(job)["model.optimizer.lr"]) == ran(job, "model.optimizer.lr")
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    accuracies = [metric(job, "val/acc_best") for job in trials]
    best = trials[accuracies.index(max(accuracies))]
    assert results.best_value == pytest.approx(max(accuracies))
    assert results.best_params["model.optimizer.lr"] == ran(best, "model.optimizer.lr")
    assert results.best_params["model.net.hidden.2"] == ran(best, "model.net.hidden")[2]


def assert_one_line_error(result, *fragments):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["hydra.sweeper.n_trials=0"], ["n_trials=0", "whole number"]),
        (["hydra.sweeper.n_trials=abc"], ["n_trials=abc", "whole number"]),
        (["hydra.sweeper.n_jobs=0"], ["n_jobs=0"]),
        (["hydra.sweeper.direction=maximise"], ["direction=maximise", "minimize or maximize"]),
        (["hydra.sweeper.max_failure_rate=-1"], ["max_failure_rate=-1", "from 0 to 1"]),
        (["hydra.sweeper.max_failure_rate=1.5"], ["max_failure_rate=1.5"]),
        (["hydra.sweeper.storage=sqlite:////proc/litlab/optuna.db"], ["/proc", "cannot write"]),
        (
            ["hydra.sweeper.storage=postgresql://litlab@127.0.0.1:1/litlab"],
            ["cannot reach the database"],
        ),
        (["hydra.sweeper.direction=[maximize,minimize]"], ["2 objective(s)", "optimized_metric"]),
        (
            ["optimized_metric=[val/acc_best,model/params]", "hydra.sweeper.pruner=median"],
            ["cannot prune a multi-objective study"],
        ),
        (
            ["optimized_metric=[val/acc_best,model/params]", "hydra/sweeper/sampler=cmaes"],
            ["CmaEsSampler optimizes one objective"],
        ),
        (["hydra.sweeper.custom_search_space=no_such_module.configure"], ["cannot import"]),
        (["hydra/sweeper/sampler=motpe"], ["removed the MOTPE sampler", "sampler=tpe"]),
        (
            ["hydra/sweeper/sampler=random", "+hydra.sweeper.sampler.n_startup_trials=5"],
            ["RandomSampler takes no n_startup_trials"],
        ),
        (["hydra.sweeper.sampler.n_startup_trials=few"], ["n_startup_trials=few"]),
        (["+hydra.sweeper.n_trial=3"], ["n_trial is not a setting", "n_trials"]),
        (
            ["hydra/sweeper/sampler=grid", "model.net.dropout=interval(0, 0.5)"],
            ["grid needs a value list for model.net.dropout"],
        ),
        (["hydra.sweeper.batch_synchronous=sometimes"], ["batch_synchronous=sometimes"]),
    ],
)
def test_a_bad_sweeper_setting_is_one_error_line_and_writes_nothing(tmp_path, overrides, fragments):
    result = run_cli(
        "litlab-train",
        "hparams_search=mnist_optuna",
        *TINY,
        *overrides,
        f"paths.log_dir={tmp_path}",
    )
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []  # no sweep directory, optuna.db or job


def test_a_failed_trial_says_its_error_and_stops_the_search_at_max_failure_rate(tmp_path, mnist):
    sweep = tmp_path / "search"
    result = run_cli(
        "litlab-train",
        "hparams_search=mnist_optuna",
        *TINY,
        "optimized_metric=val/accuracy",  # not logged: each trial is refused as it starts
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=0.0",
        f"hydra.sweep.dir={sweep}",
    )
    output = result.stdout + result.stderr  # Hydra's log goes to stdout
    warned = [line for line in output.splitlines() if "trial 0 failed:" in line]
    assert warned and "error: optimized_metric=val/accuracy is not logged" in warned[0], (
        result.stderr[-3000:]
    )
    last = [line for line in result.stderr.splitlines() if line.startswith("error:")][-1]
    assert result.returncode == 2 and "1 of 1 trials failed" in last, result.stderr[-3000:]
    assert "max_failure_rate=0.0" in last and "val/accuracy" in last
    assert [job.name for job in jobs(sweep)] == ["0"]  # no trial after the batch that failed
