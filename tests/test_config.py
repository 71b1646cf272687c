from pathlib import Path

import pytest
from conftest import compose
from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule, LightningModule

from litlab import CONFIG_DIR

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (CONFIG_DIR / "debug").glob("*.yaml"))


def test_the_issue_experiments_exist():
    required = {
        "seed_cnn",
        "mlp_sigmoid",
        "mlp_tanh",
        "mlp_relu",
        "mlp_mse",
        "cnn_avgpool",
        "fashion_cnn",
    }
    assert required <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(tmp_path, experiment):
    cfg = compose(tmp_path, f"experiment={experiment}")
    assert isinstance(instantiate(cfg.data), LightningDataModule)
    model = instantiate(cfg.model)
    assert isinstance(model, LightningModule)
    if "num_classes" in model.hparams:  # classifiers: flows from the data config
        assert model.hparams.num_classes == cfg.data.num_classes
    trainer_cfg = instantiate(cfg.trainer, _partial_=True)
    assert trainer_cfg.keywords["max_epochs"] == cfg.trainer.max_epochs


@pytest.mark.parametrize("debug", DEBUGS)
def test_debug_configs_compose(tmp_path, debug):
    cfg = compose(tmp_path, f"debug={debug}")
    assert cfg.trainer


def test_default_is_the_articles_setup(tmp_path):
    cfg = compose(tmp_path)
    assert cfg.model.net._target_ == "litlab.nets.SeedCNN"
    assert cfg.model.optimizer._target_ == "torch.optim.Adam"
    assert (cfg.trainer.max_epochs, cfg.data.batch_size) == (5, 32)


def test_a_command_line_group_choice_beats_the_default_experiment(tmp_path):
    cfg = compose(tmp_path, "model=mlp")
    assert cfg.model.net._target_ == "litlab.nets.MLP"


def test_compose_without_output_dir_gives_a_fresh_run_dir():
    import litlab

    cfg = litlab.compose("train")
    assert "/train/runs/" in Path(cfg.paths.output_dir).as_posix()


def test_the_defaults_are_the_articles_setup(tmp_path):
    plain, named = compose(tmp_path), compose(tmp_path, "experiment=seed_cnn")
    for part in ("data", "model", "trainer"):
        assert plain[part] == named[part], part
