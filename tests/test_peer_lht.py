"""lightning-hydra-template's own test scenarios, in litlab's keys, on MNIST with tiny budgets:
what a researcher coming from that template expects to work. Each asserts what the template's
test asserts, and more.

fast_dev_run; one epoch; the template's default fractional limits; a double validation loop;
gradient accumulation; DDP on 2 CPU processes, with ddp and ddp_spawn; train then resume;
train then evaluate; every experiment in one `experiment=glob(*)` sweep; a Hydra sweep, a DDP
sweep and an Optuna sweep; the datamodule's batches; every config composes and instantiates.
"""

import csv
import shutil
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from conftest import DATA_DIR, compose, need_data, read_metrics, run_cli
from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule, LightningModule
from omegaconf import OmegaConf

import litlab
from litlab import CONFIG_DIR
from litlab.data import MNISTDataModule
from litlab.errors import LitlabError
from litlab.run.checkpoints import load_checkpoint
from litlab.training.limits import check_limits

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# A small classifier, quick to train: the MLP on 2,000 labelled images.
MLP = ["experiment=mlp_relu", "data.labelled=2000", "callbacks.rich_progress_bar=null"]
# The template's default fractional limits (its ddp_sim sweep).
LHT_LIMITS = [
    "+trainer.limit_train_batches=0.01",
    "+trainer.limit_val_batches=0.1",
    "+trainer.limit_test_batches=0.1",
]


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def cli(*args: str):
    result = run_cli("litlab-train", *args, f"paths.data_dir={DATA_DIR}")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> tuple[Path, dict]:
    """One epoch of the MLP, trained once for the train, evaluate and resume scenarios."""
    need_data("MNIST")
    run_dir = tmp_path_factory.mktemp("one_epoch")
    metrics = litlab.train(compose(run_dir, *MLP, "trainer.max_epochs=1"))
    return run_dir, dict(metrics)


def test_fast_dev_run_runs_one_batch_of_each_stage_and_keeps_only_last_ckpt(tmp_path, mnist):
    metrics = litlab.train(compose(tmp_path, "debug=fdr"))  # the default, the article's CNN
    assert {"train/acc", "val/acc", "test/acc"} <= metrics.keys()
    assert metrics["test/samples"] == 1000  # one test batch
    assert checkpoints(tmp_path) == ["last.ckpt"]  # what conf/debug/fdr.yaml says it keeps
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where there is no GPU")
def test_fast_dev_run_on_a_gpu_that_is_not_here_is_one_error_line(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("litlab-train", "debug=fdr", "trainer=gpu", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert result.stderr.startswith("error: trainer.accelerator=gpu")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not run_dir.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_dev_run_on_the_gpu(tmp_path, mnist):
    metrics = litlab.train(compose(tmp_path, "debug=fdr", "trainer=gpu"))
    assert metrics["test/samples"] == 1000


def test_train_one_epoch_keeps_its_best_and_last_checkpoints(one_epoch):
    run_dir, metrics = one_epoch
    assert checkpoints(run_dir) == ["epoch_000.ckpt", "last.ckpt"]
    assert 0.5 < metrics["test/acc"] <= 1  # learned: chance is 0.1
    assert read_metrics(run_dir) == pytest.approx(metrics)


def test_train_then_evaluate_gives_the_same_test_accuracy(one_epoch, tmp_path):
    run_dir, trained = one_epoch
    last = run_dir / "checkpoints" / "last.ckpt"
    cfg = litlab.compose("eval", [f"ckpt_path={last}", f"paths.output_dir={tmp_path}"])
    evaluated = litlab.evaluate(cfg)
    assert evaluated["test/acc"] > 0
    assert evaluated["test/acc"] == trained["test/acc"]  # the template allows 0.001
    assert evaluated["test/samples"] == 10_000


def test_train_then_resume_for_a_second_epoch(one_epoch, tmp_path):
    first_dir, first = one_epoch
    run_dir = tmp_path / "run"
    shutil.copytree(first_dir, run_dir)  # the fixture's run stays as it was
    second = litlab.train(compose(run_dir, *MLP, "trainer.max_epochs=2", "resume=auto"))
    assert checkpoints(run_dir) == ["epoch_001.ckpt", "last.ckpt"]  # the better epoch kept
    assert first["train/acc"] < second["train/acc"]
    assert first["val/acc"] < second["val/acc"]
    logged = rows(run_dir)
    assert sorted(int(r["epoch"]) for r in logged if r["val/acc"]) == [0, 1]
    tested = [r for r in logged if r["test/acc"]]
    assert tested == [logged[-1]]  # the first run's test row is gone; the resumed run's ends it
    assert float(tested[0]["test/acc"]) == pytest.approx(second["test/acc"])


def test_the_templates_fractional_limits_on_mnist_are_one_line_naming_what_works(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "litlab-train",
        *MLP,
        "data.labelled=null",  # the whole training split: 0.01 of its 860 batches is 8
        *LHT_LIMITS,
        f"paths.data_dir={DATA_DIR}",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: trainer.limit_val_batches=0.1 leaves no batch")
    assert "the validation split has 5 batches" in line  # 5,000 images in batches of 1,000
    assert "at least trainer.limit_val_batches=0.2" in line
    assert not run_dir.exists()


def test_the_templates_fractional_limits_train_with_smaller_evaluation_batches(tmp_path, mnist):
    overrides = ["data.labelled=null", "data.eval_batch_size=100", "trainer.max_epochs=1"]
    metrics = litlab.train(compose(tmp_path, *MLP, *LHT_LIMITS, *overrides))
    assert metrics["test/samples"] == 1000  # 0.1 of 100 batches of 100
    # 0.01 of 55,000 images in batches of 64 (860 batches)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 8


def test_a_fraction_that_leaves_a_batch_in_all_but_none_per_ddp_process_is_refused(mnist):
    data = MNISTDataModule(data_dir=str(DATA_DIR), seed=0)
    fraction = {"limit_val_batches": 0.2, "logger": False, "accelerator": "cpu"}
    check_limits(L.Trainer(devices=1, **fraction), data, fitting=True, testing=True)  # 1 of 5
    two = L.Trainer(devices=2, strategy="ddp", **fraction)
    with pytest.raises(LitlabError, match="3 batches per process \\(2 processes\\)") as refused:
        check_limits(two, data, fitting=True, testing=True)
    assert "at least trainer.limit_val_batches=0.34" in str(refused.value)


def test_a_double_validation_loop_validates_twice_an_epoch(tmp_path, mnist):
    litlab.train(
        compose(
            tmp_path,
            *MLP,
            "trainer.max_epochs=1",
            "+trainer.val_check_interval=0.5",
            "+trainer.limit_train_batches=10",
            "+trainer.limit_val_batches=2",
            "trainer.log_every_n_steps=1",
        )
    )
    validated = [r for r in rows(tmp_path) if r["val/acc"]]
    assert [(r["epoch"], r["step"]) for r in validated] == [("0", "4"), ("0", "9")]


def test_gradient_accumulation_steps_once_every_n_batches(tmp_path, mnist):
    litlab.train(
        compose(
            tmp_path,
            *MLP,
            "trainer.max_epochs=1",
            "+trainer.accumulate_grad_batches=3",
            "+trainer.limit_train_batches=9",
            "+trainer.limit_val_batches=1",
        )
    )
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 3


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_on_2_cpu_processes_keeps_a_whole_metrics_csv(tmp_path, mnist, strategy):
    run_dir = tmp_path / "run"
    result = cli(
        *MLP,
        "trainer=ddp_cpu",
        f"trainer.strategy={strategy}",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=4",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=1",
        f"hydra.run.dir={run_dir}",
    )
    assert "MEMBER: 2/2" in result.stdout + result.stderr  # rank 1 really ran
    logged = rows(run_dir)
    assert {"train/acc", "val/acc", "test/acc"} <= logged[0].keys()
    assert sorted(int(r["epoch"]) for r in logged if r["val/acc"]) == [0, 1]
    assert sorted(int(r["epoch"]) for r in logged if r["train/acc"]) == [0, 1]
    (tested,) = [r for r in logged if r["test/acc"]]
    assert float(tested["test/acc"]) == pytest.approx(read_metrics(run_dir)["test/acc"])
    assert read_metrics(run_dir)["test/samples"] == 2 * 2 * 1000  # 2 batches on each rank


def missing_corpora() -> list[str]:
    """The experiments whose text corpus `make data` has not fetched here."""
    missing = []
    for experiment in EXPERIMENTS:
        corpus = OmegaConf.select(
            litlab.compose("train", [f"experiment={experiment}"]), "data.corpus", default=None
        )
        if corpus and not (DATA_DIR / "text" / f"{corpus}.jsonl").is_file():
            missing.append(experiment)
    return missing


def test_every_experiment_runs_in_one_glob_sweep_under_fast_dev_run(tmp_path, mnist):
    need_data("FashionMNIST")
    missing = missing_corpora()
    exclude = f", exclude=[{','.join(missing)}]" if missing else ""
    sweep = tmp_path / "sweep"
    cli("-m", f"experiment=glob(*{exclude})", "debug=fdr", f"hydra.sweep.dir={sweep}")
    ran = {}
    for job in job_dirs(sweep):
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        ran[next(o.split("=")[1] for o in overrides if o.startswith("experiment="))] = job
    assert sorted(ran) == sorted(set(EXPERIMENTS) - set(missing))
    for experiment, job in ran.items():
        assert read_metrics(job), experiment


def test_a_hydra_sweep_runs_each_value(tmp_path, mnist):
    sweep = tmp_path / "sweep"
    cli("-m", "model.optimizer.lr=0.005,0.01", "debug=fdr", f"hydra.sweep.dir={sweep}")
    jobs = job_dirs(sweep)
    assert [OmegaConf.load(j / "config.yaml").model.optimizer.lr for j in jobs] == [0.005, 0.01]
    assert all("test/acc" in read_metrics(job) for job in jobs)


def test_a_ddp_sweep_with_the_templates_limits_runs_each_job_on_2_processes(tmp_path, mnist):
    sweep = tmp_path / "sweep"
    result = cli(
        "-m",
        *MLP,
        "trainer=ddp_cpu",
        "trainer.max_epochs=3",
        "data.labelled=null",  # 0.01 of the whole training split: 4 batches a process
        "data.eval_batch_size=250",  # 0.1 of 20 validation batches: 1 a process
        *LHT_LIMITS,
        "model.optimizer.lr=0.005,0.01",
        f"hydra.sweep.dir={sweep}",
    )
    assert (result.stdout + result.stderr).count("MEMBER: 2/2") == 2
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    for job in jobs:
        assert sorted(int(r["epoch"]) for r in rows(job) if r["val/acc"]) == [0, 1, 2]
        assert read_metrics(job)["test/samples"] == 2 * 2 * 250  # 0.1 of 20 test batches a rank


def test_an_optuna_sweep_writes_its_best_trial(tmp_path, mnist):
    sweep = tmp_path / "sweep"
    cli(
        "hparams_search=mnist_optuna",
        "experiment=mlp_relu",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "debug=fdr",
        f"hydra.sweep.dir={sweep}",
    )
    trials = job_dirs(sweep)
    assert len(trials) == 3
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == max(read_metrics(t)["val/acc_best"] for t in trials)
    assert set(results.best_params) == {"model.optimizer.lr", "data.batch_size"}


@pytest.mark.parametrize("batch_size", [32, 128])
def test_the_mnist_datamodule_gives_batches_of_its_size(mnist, batch_size):
    data = MNISTDataModule(data_dir=str(DATA_DIR), batch_size=batch_size, seed=0)
    data.prepare_data()
    assert not data.splits
    data.setup()
    splits = [data.train_dataloader(), data.val_dataloader(), data.test_dataloader()]
    assert sum(len(loader.dataset) for loader in splits) == 70_000
    x, y = next(iter(splits[0]))
    assert x.shape == (batch_size, 1, 28, 28) and y.shape == (batch_size,)
    assert x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_a_train_config_composes_and_instantiates(tmp_path, experiment):
    cfg = compose(tmp_path, *([f"experiment={experiment}"] if experiment else []))
    assert isinstance(instantiate(cfg.data), LightningDataModule)
    assert isinstance(instantiate(cfg.model), LightningModule)
    assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)


def test_the_eval_config_composes_and_instantiates_its_run(one_epoch, tmp_path):
    run_dir, _ = one_epoch
    cfg = litlab.compose("eval", [f"run_dir={run_dir}", f"paths.output_dir={tmp_path}"])
    assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)
    run = litlab.load_run(cfg.run_dir)
    assert isinstance(instantiate(run.config.data), LightningDataModule)
    assert isinstance(run.model, LightningModule)
