"""Callbacks litlab adds to Lightning's."""

import csv
import io
import logging
import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from litlab import pictures
from litlab.files import atomic_write
from litlab.loggers import log_picture
from litlab.models import Classifier
from litlab.settings import PositiveInt

log = logging.getLogger(__name__)

# The hooks Lightning calls once per batch (or per optimizer step), on every callback.
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def without_idle_batch_hooks(callback: Callback) -> Callback:
    """`callback` with the batch hooks it inherits unchanged from `Callback` set to None.

    Lightning calls each hook on every callback, inside a profiler context, whether or not the
    callback does anything there, and skips an attribute that is not callable: with the default
    callbacks, those empty calls are a good share of a small net's training step on a CPU.
    """
    for hook in BATCH_HOOKS:
        if getattr(type(callback), hook) is getattr(Callback, hook) and hook not in vars(callback):
            setattr(callback, hook, None)
    return callback


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, fed every `update_every` training batches.

    The stock bar recomputes every displayed metric after each batch and redraws from a
    thread `refresh_rate` times a second; with a small net that costs as much as training.
    """

    def __init__(self, update_every: PositiveInt = 50, refresh_rate: PositiveInt = 2, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.update_every = update_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        done = batch_idx + 1
        if done % self.update_every == 0 or done == self.total_train_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class Pruning(Callback):
    """Report `metric` after each validation epoch to trial number `trial` of the Optuna study
    `study_name` in `storage`, and stop training when the study's `pruner` (a name, see
    litlab.studies.make_pruner) says so: the run ends as a finished one, with `pruned` set.

    The storage is the only link to the search, so this works wherever the job runs. A job
    whose trial has already ended (a run resumed after its search) reports nothing.
    """

    def __init__(self, storage: str, study_name: str, trial: int, pruner: str, metric: str):
        self.storage, self.study_name, self.number = storage, study_name, trial
        self.pruner, self.metric = pruner, metric
        self.trial = None  # the Optuna trial, while it runs
        self.pruned = False

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module) -> None:
        import optuna

        from litlab.studies import make_pruner, open_storage

        storage = open_storage(self.storage)
        study = optuna.load_study(
            study_name=self.study_name,
            storage=storage,
            pruner=make_pruner(self.pruner, trainer.max_epochs),
        )
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.study_name), self.number
        )
        if storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING:
            self.trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        epochs = trainer.current_epoch + 1  # the trial's step: the epochs it has trained
        value = trainer.callback_metrics.get(self.metric)
        prune = False
        if self.trial is not None and value is not None:  # rank 0 speaks to the study
            self.trial.report(float(value), epochs)
            prune = self.trial.should_prune()
        if trainer.strategy.reduce_boolean_decision(prune, all=False):  # every rank stops
            if trainer.is_global_zero:
                log.info("pruned by the %s pruner after %d epochs", self.pruner, epochs)
            self.pruned = trainer.should_stop = True


class RandomState(Callback):
    """Keeps the random number generators in checkpoints, which Lightning does not.

    A run resumed from a checkpoint then shuffles its batches and draws its dropout masks as
    the uninterrupted run would have: the states are put back when the checkpoint is restored,
    and Lightning's sanity check in between leaves them alone. Only plain types are stored, so
    `weights_only` loading accepts them.
    """

    def state_dict(self) -> dict:
        version, words, gauss = random.getstate()
        _, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "python": [version, list(words), gauss],
            "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        version, words, gauss = state["python"]
        random.setstate((version, tuple(words), gauss))
        keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class TestCoverage(Callback):
    """Logs how many inputs a test measured, `test/samples`, of the `test/samples_total` its
    split holds: fewer when `limit_test_batches` or `fast_dev_run` limit the test."""

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        n = len(batch[-1])  # the labels, one per input
        pl_module.log("test/samples", float(n), reduce_fx="sum", batch_size=n, sync_dist=True)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        loaders = trainer.test_dataloaders
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        total = sum(len(loader.dataset) for loader in loaders)
        pl_module.log("test/samples_total", float(total), sync_dist=True)


def coverage(metrics: dict[str, float]) -> str:
    """What a test measured, in words, from the metrics `TestCoverage` logged."""
    samples, total = int(metrics["test/samples"]), int(metrics["test/samples_total"])
    if samples >= total:
        return f"on all {total:,} test inputs"
    return (
        f"on {samples:,} of {total:,} test inputs, a partial test (trainer.limit_test_batches "
        "or fast_dev_run); litlab-eval tests them all"
    )


class GenerativePictures(Callback):
    """PNG pictures of what a (variational) autoencoder does, in `dirpath` and in the trackers
    that keep pictures.

    Each validation epoch: inputs above their reconstructions, and (for a VAE) samples from the
    prior. When training ends: the validation codes in 2-D coloured by class (the first two
    principal components when the code is larger), and for a 2-D code the decoded manifold.
    """

    def __init__(self, dirpath: str, n: PositiveInt = 16, scatter_points: PositiveInt = 5000):
        self.dirpath, self.n, self.scatter_points = Path(dirpath), n, scatter_points

    def _save(self, trainer, name: str, images: torch.Tensor, nrow: int) -> Path:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        grid = make_grid(images.detach().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
        path = self.dirpath / f"{name}.png"
        save_image(grid, path)
        log_picture(trainer.loggers, path, trainer.global_step, tag=name.rsplit("_epoch", 1)[0])
        return path

    def _val_batch(self, trainer) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(iter(trainer.datamodule.val_dataloader()))
        return x[: self.n], y[: self.n]

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        x, _ = self._val_batch(trainer)
        x = x.to(pl_module.device)
        epoch = f"epoch{trainer.current_epoch:03d}"
        self._save(
            trainer,
            f"reconstructions_{epoch}",
            torch.cat([x, pl_module.reconstruct(x)]),
            nrow=len(x),
        )
        if hasattr(pl_module, "sample"):
            self._save(trainer, f"samples_{epoch}", pl_module.sample(self.n * 4), nrow=self.n)

    @rank_zero_only
    @torch.no_grad()
    def on_train_end(self, trainer, pl_module) -> None:
        pl_module.eval()  # batch norm must use its running statistics, not these batches'
        codes, labels = [], []
        for x, y in trainer.datamodule.val_dataloader():
            codes.append(pl_module.encode(x.to(pl_module.device)).detach().cpu())
            labels.append(y.cpu())
            if sum(len(c) for c in codes) >= self.scatter_points:
                break
        codes, labels = torch.cat(codes), torch.cat(labels)
        self.scatter(trainer, codes, labels)
        if codes.shape[1] == 2:
            self.manifold(trainer, pl_module)

    def scatter(self, trainer, codes: torch.Tensor, labels: torch.Tensor) -> Path:
        from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays as it is

        projected = codes.shape[1] > 2
        if projected:  # the two directions of largest variance
            centered = codes - codes.mean(0)
            codes = centered @ torch.linalg.svd(centered, full_matrices=False).Vh[:2].T
        fig = Figure(figsize=(6, 5))
        ax = fig.subplots()
        points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=3)
        fig.colorbar(points, ax=ax, label="class")
        title = "validation codes" + (" (first two principal components)" if projected else "")
        ax.set_title(title)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / "latent_scatter.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        log_picture(trainer.loggers, path, trainer.global_step)
        return path

    def manifold(self, trainer, pl_module, steps: int = 20) -> Path:
        # Gaussian quantiles, so the grid covers the prior evenly
        values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, steps))
        # rows from high z1 (top) to low, columns from low z0 (left) to high: as in the scatter
        z = torch.cartesian_prod(values.flip(0), values)[:, [1, 0]].to(pl_module.device)
        return self._save(trainer, "latent_manifold", pl_module.decode(z), nrow=steps)


class RunPictures(Callback):
    """PNG pictures of a run in `dirpath`, also shown by the trackers that keep pictures.

    When training ends: learning curves, each logged loss and metric per epoch, train against
    val. After testing a classifier: the confusion matrix of the test set, with class names
    (and its counts in confusion_matrix.csv).
    """

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.history: dict[str, dict[int, float]] = {}  # "train/loss" -> {epoch: value}
        self.confusion: torch.Tensor | None = None  # [true, predicted] counts of the last test

    def state_dict(self) -> dict:
        return {"history": self.history}  # a resumed run keeps its earlier epochs

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = state_dict["history"]

    def _record(self, trainer, stage: str, epoch: int) -> None:
        for key, value in trainer.callback_metrics.items():
            name = key.split("/", 1)[-1]
            if key.startswith(f"{stage}/") and not name.endswith(("_step", "_best")):
                self.history.setdefault(key, {})[epoch] = float(value)

    # A LightningModule logs its train epoch metrics after the callbacks' on_train_epoch_end:
    # they are read when the next epoch starts, or when training ends.
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer, "train", trainer.current_epoch - 1)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, "val", trainer.current_epoch)

    @rank_zero_only
    def on_train_end(self, trainer, pl_module) -> None:
        self._record(trainer, "train", max(trainer.current_epoch - 1, 0))
        self._save(trainer, "learning_curves", pictures.learning_curves(self.history))

    def _save(self, trainer, name: str, figure) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        log_picture(trainer.loggers, path, trainer.global_step)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.confusion = None
        if isinstance(pl_module, Classifier):
            n = pl_module.hparams.num_classes
            self.confusion = torch.zeros(n, n, dtype=torch.int64, device=pl_module.device)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.confusion is not None:
            x, y = batch
            predicted = pl_module(x).argmax(dim=-1)  # test_step keeps no predictions
            n = len(self.confusion)
            self.confusion += torch.bincount(y * n + predicted, minlength=n * n).view(n, n)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self.confusion is not None:
            self.confusion = trainer.strategy.reduce(self.confusion, reduce_op="sum").cpu()
            self._save_confusion(trainer)

    @rank_zero_only
    def _save_confusion(self, trainer) -> None:
        """The picture, and the numbers behind it: a row per true class, a column per prediction."""
        names = getattr(trainer.datamodule, "class_names", None) or range(len(self.confusion))
        names = [str(name) for name in names]
        self._save(trainer, "confusion_matrix", pictures.confusion_matrix(self.confusion, names))
        text = io.StringIO()
        table = csv.writer(text, lineterminator="\n")
        table.writerow(["true \\ predicted", *names])
        for name, row in zip(names, self.confusion.tolist(), strict=True):
            table.writerow([name, *row])
        atomic_write(self.dirpath / "confusion_matrix.csv", text.getvalue())
