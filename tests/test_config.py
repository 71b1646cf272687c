import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest
from conftest import compose
from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule, LightningModule
from omegaconf import OmegaConf

import litlab
from litlab import CONFIG_DIR, objective, settings
from litlab.config.check import THEIRS, _misfit, check_config, settings_of
from litlab.errors import LitlabError

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


def test_which_way_a_metric_improves_is_decided_once(tmp_path):
    from litlab.models import VAE, Classifier

    for experiment, metric, mode in (
        ("seed_cnn", "val/acc", "max"),
        ("vae_mlp", "val/loss", "min"),
    ):
        cfg = compose(tmp_path, f"experiment={experiment}")
        assert cfg.monitor == metric and cfg.monitor_mode == mode
        callbacks = cfg.callbacks
        assert callbacks.model_checkpoint.mode == callbacks.early_stopping.mode == mode
    assert compose(tmp_path, "monitor=val/loss").monitor_mode == "min"
    assert compose(tmp_path, "monitor=val/loss", "monitor_mode=max").monitor_mode == "max"
    search = litlab.compose(
        "train", ["hparams_search=mnist_optuna", "optimized_metric=val/loss_best"], hydra=True
    )
    assert search.hydra.sweeper.direction == "minimize"
    assert objective.mode("test/log_prob") == objective.mode("val/acc_best") == "max"
    assert objective.mode("val/recon") == objective.mode("scratch/test/loss") == "min"
    assert (Classifier.best_of, VAE.best_of) == ("acc", "loss")


# --- the check: every value of every shipped config by type and range ------------------------

SPEEDS_AND_LOGGERS = [[], ["speed=cpu"], ["logger=many"], ["logger=mlflow"], ["logger=wandb"]]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_config_fits_the_classes_it_names(tmp_path, experiment):
    for extra in [*SPEEDS_AND_LOGGERS, *([f"debug={d}"] for d in DEBUGS), ["scheduler=step"]]:
        check_config(compose(tmp_path, f"experiment={experiment}", *extra))


def shipped_targets() -> set[str]:
    targets = set()
    for path in CONFIG_DIR.rglob("*.yaml"):
        targets |= set(re.findall(r"^\s*_target_:\s*(\S+)", path.read_text(), re.M))
    # the launcher's and sweeper's settings are Hydra's own (hydra.launcher, hydra.sweeper and
    # the search's Optuna sampler)
    return {t for t in targets if not t.startswith(("hydra_plugins.", "optuna."))}


def test_every_class_the_configs_name_has_settings_the_check_reads():
    assert all(settings_of(target) is not None for target in shipped_targets())


def accepted(cls) -> set[str]:
    """The keyword arguments a class takes, through the `**kwargs` it passes to its bases."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD}
        names |= {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names - {"self"}


@pytest.mark.parametrize("target", sorted(t for t in shipped_targets() if t.startswith("litlab.")))
def test_the_settings_read_from_source_are_the_imported_class_s_signature(target):
    module, name = target.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    read = settings_of(target)
    assert set(read.hints) <= accepted(cls)
    if read.closed:
        assert set(read.hints) == accepted(cls)
    for klass in cls.__mro__:  # each annotation, as Python itself reads it
        if klass.__module__.startswith("litlab.") and "__init__" in vars(klass):
            for key, hint in get_type_hints(klass.__init__, include_extras=True).items():
                if key in read.hints and key != "return":
                    assert read.hints[key] == hint or read.hints[key] is Any, (klass, key)


# Settings of theirs that litlab's own code reads, not the class.
LITLABS_OWN = {"interval"}  # a scheduler's: when litlab.models.base steps it


@pytest.mark.parametrize("target", sorted(THEIRS))
def test_the_settings_declared_for_torch_and_lightning_are_their_real_signatures(target):
    module, name = target.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    parameters = inspect.signature(cls.__init__).parameters
    declared = get_type_hints(THEIRS[target], include_extras=True)
    named = set(declared) - LITLABS_OWN
    passed_on = any(p.kind is p.VAR_KEYWORD for p in parameters.values())  # wandb.init's
    assert named <= set(parameters) or passed_on, (target, named - set(parameters))
    for key in named & set(parameters):  # the class's own default is a value it takes
        default = parameters[key].default
        if default is not inspect.Parameter.empty and isinstance(default, int | float | str):
            value = OmegaConf.create({key: default})[key]
            assert _misfit(value, declared[key]) is None, (target, key, default)


def test_a_choice_list_is_stated_once_and_the_code_s_tables_follow_it():
    from litlab.data.mnist import DATASETS
    from litlab.kernels.recurrent import CELLS
    from litlab.nets.layers import ACTIVATIONS, POOLS

    for choices, table in [
        (settings.Activation, ACTIVATIONS),
        (settings.Pool, POOLS),
        (settings.Cell, CELLS),
        (settings.MNISTFamily, DATASETS),
    ]:
        assert set(get_args(choices)) == set(table)


def test_a_user_s_own_class_is_checked_from_its_annotations(tmp_path, monkeypatch):
    (tmp_path / "tiny_nets.py").write_text(
        "from torch import nn\n"
        "class TinyCNN(nn.Sequential):\n"
        "    def __init__(self, input_shape, num_classes, width: int = 8):\n"
        "        super().__init__(nn.Flatten(), nn.LazyLinear(num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    net = {"_target_": "tiny_nets.TinyCNN", "input_shape": [1, 28, 28], "num_classes": 10}
    check_config(OmegaConf.create({"model": {"net": net}}))
    for extra, message in [
        ({"width": "abc"}, "model.net.width='abc' is not an integer"),
        ({"depth": 2}, "model.net.depth is not a setting of tiny_nets.TinyCNN (it takes"),
    ]:
        with pytest.raises(LitlabError) as refused:
            check_config(OmegaConf.create({"model": {"net": {**net, **extra}}}))
        assert message in str(refused.value)
    # Read from its source: neither the module nor torch is imported to check it.
    code = "from litlab.config.check import settings_of; import sys; "
    code += "print(settings_of('tiny_nets.TinyCNN').hints['width'], 'torch' in sys.modules)"
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == ["<class", "'int'>", "False"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be a positive integer"),
        (["trainer.precision=fp8"], "trainer.precision='fp8' is not one of 16-true"),
        (["data.val_size=abc"], "data.val_size='abc' is not a positive integer"),
        (["data.input_shape=[1,28]", "data.input_shape=[1,-28,28]"], "is not a list of positive"),
        (["model.optimizer.lr=-0.1"], "model.optimizer.lr=-0.1 must be a positive number"),
        (["optimizer=sgd", "model.optimizer.momentum=-1"], "must be a non-negative number"),
        (["model.compile=fastest"], "model.compile='fastest' is not one of false, default"),
        (["model.compile={mode:default,fullgraph:yes}"], "model.compile.fullgraph='yes' is not"),
        (["model.compile={mode:default,graphs:2}"], "model.compile.graphs is not a setting"),
        (["+model.net.width=3"], "model.net.width is not a setting of litlab.nets.SeedCNN"),
        (["experiment=seed_rnn", "data.val_fraction=1.0"], "data.val_fraction=1.0 must be"),
        (["experiment=gru_bbc", "model.net.cell=transformer"], "model.net.cell='transformer'"),
        (["callbacks.early_stopping.patience=-1"], "callbacks.early_stopping.patience=-1"),
        (["callbacks.rich_progress_bar.update_every=0"], "update_every=0 must be a positive"),
        (["monitor_mode=maximum"], "monitor_mode='maximum' is not one of max, min"),
        (["resume=always"], "resume='always' is not one of auto, auto_or_fresh, null"),
        (["seed=1.5"], "seed=1.5 is not an integer"),
        (["experiment=vae_pretrain_cnn", "pretrain.max_epochs=0"], "pretrain.max_epochs=0"),
        (["experiment=vae_mlp", "model.beta=-1"], "model.beta=-1 must be a non-negative"),
        (["experiment=speedrun", "model.net.kernel_size=[5,0]"], "model.net.kernel_size=[5, 0]"),
        (["experiment=speedrun", "model.scheduler.interval=batch"], "is not one of epoch, step"),
        (["experiment=speedrun", "model.optimizer.betas=[0.7,1.2]"], "betas=[0.7, 1.2] is not"),
    ],
)
def test_a_value_that_does_not_fit_is_one_line_naming_its_key(tmp_path, overrides, message):
    with pytest.raises(LitlabError) as refused:
        check_config(compose(tmp_path, *overrides))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_value_from_an_interpolation_is_checked_where_it_points_to(tmp_path):
    with pytest.raises(LitlabError, match=r"^data.num_classes=0 must be"):
        check_config(compose(tmp_path, "data.num_classes=0"))  # model.net.num_classes follows


def test_a_user_s_own_class_takes_its_own_settings(tmp_path, monkeypatch):
    (tmp_path / "mypackage.py").write_text(
        "class Open:\n    def __init__(self, **settings):\n        pass\n"
        "Wide = Callback = Net = Open\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose(tmp_path, "model=mlp", "model.net._target_=mypackage.Wide", "+model.net.width=9")
    check_config(cfg)  # its settings are its own business
    cfg = compose(tmp_path, "+callbacks.mine._target_=mypackage.Callback", "+callbacks.mine.x=1")
    check_config(cfg)
    with pytest.raises(LitlabError, match="model.optimizer.lr=0 must be"):  # ours still checked
        check_config(compose(tmp_path, "model.net._target_=mypackage.Net", "model.optimizer.lr=0"))
