"""A run's pictures: learning curves and a confusion matrix, and what an autoencoder does.

The figures are plain matplotlib `Figure`s, outside pyplot: no display and no global state
needed, and a notebook shows one by evaluating it. The callbacks save them as PNGs in the run
and hand them to the trackers that keep pictures.
"""

import csv
import io
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from litlab.files import atomic_write, replacing
from litlab.models import Classifier
from litlab.settings import PositiveInt
from litlab.training.loggers import log_picture


def learning_curves(history: dict[str, dict[int, float]]):
    """One panel per loss or metric, its train and val values per epoch.

    `history` maps a logged name ("train/loss", "val/acc") to its value per epoch.
    """
    from matplotlib.figure import Figure

    names = sorted({key.split("/", 1)[1] for key in history}, key=lambda n: (n != "loss", n))
    panels = max(len(names), 1)
    fig = Figure(figsize=(4.5 * panels, 3.5), layout="tight")
    for ax, name in zip(fig.subplots(1, panels, squeeze=False)[0], names, strict=False):
        for stage, style in (("train", "o-"), ("val", "s--")):
            values = history.get(f"{stage}/{name}", {})
            epochs = sorted(values)
            if epochs:
                ax.plot([e + 1 for e in epochs], [values[e] for e in epochs], style, label=stage)
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_matrix(counts: torch.Tensor, class_names: list[str]):
    """Counts of true (rows) against predicted (columns) classes, coloured by each row's share."""
    from matplotlib.figure import Figure

    counts = counts.cpu()
    n = len(counts)
    share = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    side = max(4.0, 0.55 * n + 2)
    fig = Figure(figsize=(side + 1, side), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    names = [str(name) for name in class_names]
    ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right")
    ax.set_yticks(range(n), names)
    accuracy = counts.diag().sum().item() / max(counts.sum().item(), 1)
    ax.set(xlabel="predicted", ylabel="true", title=f"test accuracy {accuracy:.4f}")
    return fig


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
        with replacing(path) as f:  # a full disk leaves the last whole picture
            save_image(grid, f, format="png")
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
        with replacing(path) as f:
            fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
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
        self._save(trainer, "learning_curves", learning_curves(self.history))

    def _save(self, trainer, name: str, figure) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        with replacing(path) as f:
            figure.savefig(f, format="png", dpi=100, bbox_inches="tight")
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
        self._save(trainer, "confusion_matrix", confusion_matrix(self.confusion, names))
        text = io.StringIO()
        table = csv.writer(text, lineterminator="\n")
        table.writerow(["true \\ predicted", *names])
        for name, row in zip(names, self.confusion.tolist(), strict=True):
            table.writerow([name, *row])
        atomic_write(self.dirpath / "confusion_matrix.csv", text.getvalue())
