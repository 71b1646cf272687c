"""Sweeps through litlab-train: Hydra's launchers and Optuna, litlab-report, and bad sweeps."""

import csv
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, cli_command, compose, read_metrics, run_cli
from events import held, hold
from hydra import compose as compose_hydra
from hydra import initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import litlab
from litlab import CONFIG_DIR
from litlab.cli.report import main as report_main
from litlab.cli.train import check_sweep
from litlab.errors import LitlabError
from litlab.sweeps.report import make_report

# A job of a few seconds: 20 batches of an MLP, 2 validation and test batches.
TINY = [
    "experiment=mlp_relu",
    "debug=limit",
    "trainer.max_epochs=1",
    "callbacks.rich_progress_bar=null",
    f"paths.data_dir={DATA_DIR}",
]


def the_sweep(log_dir: Path) -> Path:
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()  # exactly one sweep directory
    return sweep


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_a_2x2_sweep_in_parallel_gives_4_job_directories_that_the_report_ranks(tmp_path, mnist):
    result = run_cli(
        "litlab-train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",  # two jobs start in the same second
        "model.net.activation=relu,tanh",
        "model.optimizer.lr=0.01,0.1",
        *TINY,
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    jobs = job_dirs(sweep)
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    combinations = {tuple(OmegaConf.load(job / ".hydra" / "overrides.yaml")[:2]) for job in jobs}
    assert len(combinations) == 4
    for job in jobs:  # each job wrote into its own directory only
        assert OmegaConf.load(job / "config.yaml").paths.output_dir == str(job.resolve())
        assert (job / "checkpoints" / "last.ckpt").is_file()

    report = run_cli("litlab-report", str(sweep))
    assert report.returncode == 0, report.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    best = [float(row["val/acc_best"]) for row in rows]
    assert len(rows) == 4 and best == sorted(best, reverse=True)
    assert {(row["model.net.activation"], row["model.optimizer.lr"]) for row in rows} == {
        (a, lr) for a in ("relu", "tanh") for lr in ("0.01", "0.1")
    }
    for row in rows:
        assert float(row["test/acc"]) == pytest.approx(read_metrics(sweep / row["job"])["test/acc"])
    table = report.stdout
    first, last = table.index(f"{best[0]:.4f}"), table.index(f"{best[-1]:.4f}")
    assert first < last  # printed best first
    for param in ("model.net.activation", "model.optimizer.lr"):
        assert (sweep / f"report_{param}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_optuna_search_runs_3_trials_and_writes_its_best_params(tmp_path, mnist):
    result = run_cli(
        "litlab-train",
        "hparams_search=mnist_optuna",
        "hydra.sweeper.n_trials=3",
        *TINY,
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    trials = job_dirs(sweep)
    assert len(trials) == 3
    returned = [read_metrics(trial)["val/acc_best"] for trial in trials]  # what Optuna was told
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == pytest.approx(max(returned))
    best = trials[returned.index(max(returned))]
    overrides = dict(o.split("=", 1) for o in OmegaConf.load(best / ".hydra" / "overrides.yaml"))
    assert set(results.best_params) == {"model.optimizer.lr", "data.batch_size"}
    for key, value in results.best_params.items():
        assert float(overrides[key]) == pytest.approx(value)


def submitit_tasks(folder: Path) -> list[int]:
    """The processes running submitit jobs whose command line mentions `folder`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in args and any(str(folder).encode() in a for a in args):
            pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc")
def test_a_submitit_job_preempted_mid_run_is_requeued_and_resumes_by_itself(tmp_path, mnist):
    sweep, reached = tmp_path / "sweep", tmp_path / "reached"
    command = cli_command("litlab-train")
    job = subprocess.Popen(
        [
            *command,
            "-m",
            "hydra/launcher=submitit_local",
            "experiment=mlp_relu",
            "data.labelled=5000",
            "trainer.max_epochs=2",
            "callbacks.rich_progress_bar=null",
            # Mid-way through the second epoch (79 batches an epoch), the job waits for the signal.
            *hold(step=100, reached=reached),
            f"paths.data_dir={DATA_DIR}",
            f"hydra.sweep.dir={sweep}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 300
        while not held(reached):
            assert job.poll() is None and time.monotonic() < deadline, job.stderr.read()[-3000:]
            time.sleep(0.01)
        (task,) = submitit_tasks(sweep)
        assert held(reached) == task  # the job's own process holds
        os.kill(task, signal.SIGUSR2)  # what SLURM sends before preempting or timing out
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0, stderr[-3000:]
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    assert "this job is preempted" in logs and "Requeued job" in logs
    assert f"resuming from {last}" in logs
    rows = list(csv.DictReader((sweep / "0" / "csv" / "metrics.csv").open()))
    assert sorted(int(r["epoch"]) for r in rows if r["val/acc"]) == [0, 1]  # nothing lost
    assert read_metrics(sweep / "0")["test/acc"] > 0.8


def test_a_job_that_fails_in_a_sweep_fails_alone_and_the_sweep_says_so(tmp_path, mnist):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "litlab-train",
        "-m",
        *TINY,
        "trainer.limit_val_batches=0.1,1",  # 0.1 of MNIST's 5 validation batches is none
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    output = result.stdout + result.stderr
    reason = "trainer.limit_val_batches=0.1 leaves no batch"
    assert f"error: {reason}" in output  # the job's own line, as it failed
    (last,) = [line for line in output.splitlines() if line.startswith("error: job")]
    assert last.startswith(f"error: job 0 failed: {reason}")
    assert (sweep / "0" / "error.txt").read_text().startswith(reason)
    assert reason in (sweep / "0" / "train.log").read_text()
    assert "test/acc" in read_metrics(sweep / "1")  # the next job ran
    report = make_report(sweep)
    assert sorted((job.name, job.status) for job in report.jobs) == [
        ("0", "failed"),
        ("1", "finished"),
    ]


def test_the_slurm_launcher_runs_one_task_per_gpu_and_ddp_takes_the_node_count(monkeypatch):
    overrides = ["hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose_hydra("train", [*overrides, "trainer=ddp"], return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert (launcher.params["nodes"], launcher.params["tasks_per_node"]) == (2, 4)
    assert launcher.params["max_num_timeout"] > 0  # requeued at the time limit, then resumed
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")  # as SLURM sets them in the job
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 4)


def assert_one_line_error(result, *fragments):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0]


def test_a_sweep_over_a_key_that_does_not_exist_stops_before_any_job(tmp_path):
    result = run_cli(
        "litlab-train", "-m", "model.optimizer.lrr=0.01,0.1", *TINY, f"paths.log_dir={tmp_path}"
    )
    assert_one_line_error(result, "model.optimizer.lrr", "+model.optimizer.lrr=")
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra/launcher=nope", "seed=1,2"], "Could not find 'hydra/launcher/nope'"),
        (["model=mlp,nope"], "Could not find 'model/nope'"),
        (["hparams_search=mnist_optuna", "model.optimizer.lrr=interval(0.1, 1)"], "cannot sweep"),
        (["experiment=mlp_relu,mlp_tanhh"], "Could not find 'experiment/mlp_tanhh'"),
        (["debug=fdr,limitt"], "Could not find 'debug/limitt'"),
        (["experiment=glob(zzz*)"], "picks none of experiment's options"),
    ],
)
def test_a_bad_sweep_is_refused_before_it_starts(overrides, message):
    with pytest.raises(LitlabError, match=message) as refused:
        check_sweep(["litlab-train", "-m", *overrides])
    assert "\n" not in str(refused.value)
    if "launcher" in message:  # names what there is
        assert "joblib" in str(refused.value) and "slurm" in str(refused.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=mlp_relu,mlp_tanh"],
        ["experiment=glob(*)", "debug=fdr"],
        ["experiment=glob(mlp_*,exclude=mlp_mse)", "debug=fdr,limit"],
        ["model=mlp,cnn", "optimizer=adam,sgd"],
    ],
)
def test_any_config_group_can_be_swept_as_in_hydra(overrides):
    check_sweep(["litlab-train", "-m", *overrides])  # refused nothing


def test_a_sweep_over_experiments_runs_a_job_each(tmp_path):
    command = ["-m", "experiment=mlp_relu,mlp_tanh", "debug=fdr", f"paths.log_dir={tmp_path}"]
    result = run_cli("litlab-train", *command)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(sweep.glob("[0-9]*"))
    assert [job.name for job in jobs] == ["0", "1"]
    assert [list(OmegaConf.load(job / ".hydra" / "overrides.yaml"))[:2] for job in jobs] == [
        ["experiment=mlp_relu", "debug=fdr"],
        ["experiment=mlp_tanh", "debug=fdr"],
    ]
    assert [OmegaConf.load(job / "config.yaml").model.net.activation for job in jobs] == [
        "relu",
        "tanh",
    ]
    assert all((job / "metrics.json").is_file() for job in jobs)


def test_a_sweep_optimizing_a_metric_the_model_does_not_log_is_refused(tmp_path):
    cfg = compose(tmp_path, "experiment=mlp_relu", "optimized_metric=val/accuracy")
    with pytest.raises(LitlabError, match="optimized_metric=val/accuracy is not logged"):
        litlab.train(cfg)
    assert not (tmp_path / "config.yaml").exists()


def fake_job(sweep: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps({"metrics": metrics}))


def test_the_report_ranks_a_loss_lowest_first_and_lists_unfinished_jobs_last(tmp_path):
    fake_job(tmp_path, "0", ["model.optimizer.lr=0.1", "seed=1"], {"val/loss": 0.5})
    fake_job(tmp_path, "1", ["model.optimizer.lr=0.001", "seed=1"], {"val/loss": 0.2})
    fake_job(tmp_path, "2", ["model.optimizer.lr=0.01", "seed=1"], None)  # still running
    fake_job(tmp_path, "10", ["model.optimizer.lr=1.0", "seed=1"], {"val/loss": 0.9})
    report = make_report(tmp_path, metric="val/loss")
    assert report.mode == "min" and report.params == ["model.optimizer.lr"]
    assert [job.name for job in report.jobs] == ["1", "0", "10", "2"]
    assert [p.name for p in report.plots] == ["report_model.optimizer.lr.png"]
    assert not report.by_seed  # one row per job, as the table
    header = ["job", "status", "model.optimizer.lr", "val/loss"]
    assert next(csv.reader(report.csv.open())) == header


def test_the_report_gives_the_values_a_job_ran_with_read_from_its_own_config(tmp_path):
    fake_job(tmp_path, "0", ["model.net.hidden.0=64", "model.optimizer.lr=1e-3"], {"val/acc": 0.9})
    fake_job(tmp_path, "1", ["model.net.hidden.0=32", "model.optimizer.lr=1e-2"], {"val/acc": 0.8})
    for job, hidden, lr in (("0", [16, 16], 0.001), ("1", [32, 16], 0.01)):  # job 0: overridden
        ran = {"model": {"net": {"hidden": hidden}, "optimizer": {"lr": lr}}}
        OmegaConf.save(OmegaConf.create(ran), tmp_path / job / "config.yaml")
    report = make_report(tmp_path, metric="val/acc")
    assert [job.params for job in report.jobs] == [
        {"model.net.hidden.0": "16", "model.optimizer.lr": "1e-3"},  # as typed where the same
        {"model.net.hidden.0": "32", "model.optimizer.lr": "1e-2"},
    ]


def test_the_report_of_a_directory_without_jobs_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        report_main([str(tmp_path)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "holds no jobs" in err and "\n" not in err


# val/acc_best by seed, chosen so that the statistics come out round by hand.
SEEDED = {
    ("relu", "0.01"): {1: 0.90, 2: 0.92, 3: 0.94, 4: 0.98},
    ("relu", "0.1"): {1: 0.85, 2: 0.91, 3: 0.88, 4: None},  # seed 4 has not finished
    ("tanh", "0.01"): {1: 0.80, 2: 0.81, 3: 0.82},
}
T2, T3 = 4.302653, 3.182446  # the tables' two-sided 95% t for 2 and 3 degrees of freedom


def seeded_sweep(sweep: Path) -> None:
    job = 0
    for (activation, lr), accuracies in SEEDED.items():
        for seed, acc in accuracies.items():
            overrides = [f"model.net.activation={activation}", f"model.optimizer.lr={lr}"]
            metrics = None if acc is None else {"val/acc_best": acc, "val/loss_best": 1 - acc}
            fake_job(sweep, str(job), ["experiment=mlp_relu", *overrides, f"seed={seed}"], metrics)
            job += 1


def stats_of(config) -> list[float]:
    s = config.stats
    return [s.n, s.mean, s.std, s.low, s.high, s.min, s.max]


def test_the_seed_table_ranks_configurations_by_mean_with_the_interval_by_hand(tmp_path):
    seeded_sweep(tmp_path)
    report = make_report(tmp_path)
    assert report.by_seed and report.metric == "val/acc_best"
    assert report.config_params == ["model.net.activation", "model.optimizer.lr"]
    rows = list(csv.DictReader(report.csv.open()))  # one row per configuration, best mean first
    assert [(r["model.net.activation"], r["model.optimizer.lr"]) for r in rows] == [
        ("relu", "0.01"),
        ("relu", "0.1"),
        ("tanh", "0.01"),
    ]
    columns = ["n", "mean", "std", "ci95_low", "ci95_high", "min", "max"]
    # relu, 0.01: 0.90 0.92 0.94 0.98; mean 0.935, deviations -.035 -.015 .005 .045
    std = math.sqrt((0.035**2 + 0.015**2 + 0.005**2 + 0.045**2) / 3)
    half = T3 * std / math.sqrt(4)
    by_hand = [4, 0.935, std, 0.935 - half, 0.935 + half, 0.90, 0.98]
    # relu, 0.1: 0.85 0.91 0.88; the unfinished seed 4 is named and not counted
    half = T2 * 0.03 / math.sqrt(3)
    by_hand_too = [3, 0.88, 0.03, 0.88 - half, 0.88 + half, 0.85, 0.91]
    for row, config, hand in zip(rows, report.configs, [by_hand, by_hand_too], strict=False):
        assert stats_of(config) == pytest.approx(hand, abs=1e-6)
        assert [float(row[column]) for column in columns] == pytest.approx(hand, abs=1e-6)
    assert (rows[0]["seeds"], rows[0]["jobs"], rows[0]["missing"]) == ("1 2 3 4", "0 1 2 3", "")
    assert (rows[1]["seeds"], rows[1]["jobs"], rows[1]["missing"]) == ("1 2 3", "4 5 6", "7")
    assert [job.name for job in report.configs[1].missing] == ["7"]
    assert report.configs[2].stats.mean == pytest.approx(0.81)
    assert [p.name for p in report.plots] == [
        "report_model.net.activation.png",
        "report_model.optimizer.lr.png",
    ]


def test_compare_gives_the_paired_difference_over_shared_seeds_by_hand(tmp_path):
    seeded_sweep(tmp_path)
    a, b = "model.net.activation=relu model.optimizer.lr=0.01", "model.optimizer.lr=1e-1"
    close = make_report(tmp_path, compare=(a, b)).comparison
    # Seeds 1-3 only (seed 4 of B has no metric): differences .05 .01 .06, mean .04,
    # deviations .01 -.03 .02, so std √(14e-4 / 2); the interval holds 0 though A wins all 3.
    assert close.seeds == ["1", "2", "3"] and close.wins == (3, 0)
    d, half = close.difference, T2 * math.sqrt(7e-4) / math.sqrt(3)
    assert (d.n, d.mean, d.std) == (3, pytest.approx(0.04), pytest.approx(math.sqrt(7e-4)))
    assert (d.low, d.high) == (
        pytest.approx(0.04 - half, abs=1e-6),
        pytest.approx(0.04 + half, abs=1e-6),
    )
    assert d.low < 0 < d.high
    assert "The interval includes 0: these seeds do not show either one better." in close.text()

    # relu against tanh at 0.01: differences .10 .11 .12, std 0.01; the interval excludes 0.
    clear = make_report(tmp_path, compare=(a, "model.net.activation=tanh")).comparison
    half = T2 * 0.01 / math.sqrt(3)
    assert clear.difference.mean == pytest.approx(0.11) and clear.wins == (3, 0)
    assert clear.difference.low == pytest.approx(0.11 - half, abs=1e-6)
    assert "The interval excludes 0: A is the better over these seeds." in clear.text()

    # On a loss lower is better: the difference turns, the winner does not.
    by_loss = make_report(tmp_path, "val/loss_best", compare=("model.net.activation=tanh", a))
    assert by_loss.comparison.difference.mean == pytest.approx(0.11)
    assert by_loss.comparison.wins == (0, 3)
    assert "B is the better" in by_loss.comparison.text()


def test_the_cli_prints_the_seed_table_the_job_left_out_and_the_comparison(tmp_path, capsys):
    seeded_sweep(tmp_path)
    report_main([str(tmp_path), "--compare", "model.net.activation=tanh", "model.optimizer.lr=0.1"])
    out = capsys.readouterr().out
    assert "3 configurations over 4 seeds, ranked by mean val/acc_best (max)" in out
    assert out.index("0.9350") < out.index("0.8800") < out.index("0.8100")  # best mean first
    assert f"{T3 * math.sqrt(0.0035 / 3) / 2:.4f}" in out  # the interval's half-width
    assert "job 7 (model.net.activation=relu model.optimizer.lr=0.1 seed=4): unfinished" in out
    assert "A minus B on the 3 seeds (1, 2, 3) both ran: mean -0.0700" in out
    assert "The interval excludes 0: B is the better" in out
    assert (tmp_path / "report.csv").is_file()


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        (["model.optimizer.lr=0.5", "model.optimizer.lr=0.1"], "holds no such configuration"),
        (["model.net.width=8", "model.optimizer.lr=0.1"], "no job sets model.net.width"),
        (["model.optimizer.lr=0.01", "model.optimizer.lr=0.1"], "matches 2 configurations"),
        (["seed=1", "seed=2"], "leave seed= out"),
        (["model.optimizer.lr=0.1", "model.optimizer.lr=1e-1"], "the same configuration"),
        (["0.01", "model.optimizer.lr=0.1"], "as key=value"),
    ],
)
def test_compare_of_a_configuration_the_sweep_does_not_hold_is_refused(
    tmp_path, capsys, compare, message
):
    seeded_sweep(tmp_path)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(SystemExit) as stopped:
        report_main([str(tmp_path), "--compare", *compare])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --compare") and message in err and "\n" not in err
    assert sorted(tmp_path.iterdir()) == before  # no report.csv, no plot
