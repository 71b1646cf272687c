"""Epoch time: `litlab.train` (what litlab-train runs) vs a hand-written PyTorch loop.

Same net, same in-memory data and split, Adam, batch 32, a validation pass per epoch on both
sides; litlab keeps its default callbacks (checkpointing, early stopping, rich progress bar,
model summary, run pictures) and CSV logger. The faster of two epochs is reported for each side.
"""

import logging

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from report import EpochTimer, timed, train_config, write_section

import litlab

NOTES = """\
*Bare Lightning* is a minimal LightningModule with the same net and optimizer, in Lightning's
automatic optimization, and no logger, callbacks or metrics: the difference to the plain loop is
Lightning's loop itself (closure, hooks, fetcher, progress counters), a fixed cost per step that
a small net's step at batch 32 cannot hide. litlab's models take the optimizer step themselves
(manual optimization, still through Lightning's optimizer, precision plugin and strategy, so
mixed precision and DDP hold), which skips the closure and the hooks around it; only where the
Trainer clips or accumulates gradients do they fall back to Lightning's own loop. They add each
batch's loss and accuracy to running sums on the device and hand those to torchmetrics once an
epoch: no torchmetrics update, `self.log` or host sync per step. litlab keeps its checkpointing,
early stopping, run pictures, random-state callback, CSV logger and a progress bar fed every 50
batches (Lightning's stock rich bar recomputed every displayed metric after each batch and
redrew 20 times a second). What is left over bare Lightning is mostly Lightning dispatching each
per-step hook to every callback. Wall times on this shared 2-core machine vary by a few percent
from run to run."""

EPOCHS = 2
NETS = {"MLP": "model=mlp", "SeedCNN": "model=seed_cnn"}
ROWS = tuple(NETS)
GOALS = {"MLP": 1.15, "SeedCNN": 1.05}  # at most this many times the plain loop's epoch


def config(model_override: str):
    return train_config(
        model_override,
        "data.batch_size=32",
        f"trainer.max_epochs={EPOCHS}",
        "test=false",
        "+callbacks.epoch_timer._target_=report.EpochTimer",
    )


def plain_loop(cfg) -> float:
    """The loop a researcher would write by hand, over the same data tensors."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    train, val = datamodule.splits["train"], datamodule.splits["val"]
    net = instantiate(cfg.model.net)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.model.optimizer.lr)
    times = []
    for _ in range(EPOCHS):

        def epoch():
            net.train()
            for index in torch.randperm(len(train)).split(cfg.data.batch_size):
                x, y = train.__getitems__(index)
                loss = F.cross_entropy(net(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            net.eval()
            with torch.no_grad():
                for index in torch.arange(len(val)).split(cfg.data.eval_batch_size):
                    x, y = val.__getitems__(index)
                    (net(x).argmax(1) == y).float().mean()

        times.append(timed(epoch))
    return min(times)


class BareModule(L.LightningModule):
    """The least a LightningModule can be: what Lightning's own loop costs, without litlab."""

    def __init__(self, net, lr):
        super().__init__()
        self.net, self.lr = net, lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        (self.net(x).argmax(1) == y).float().mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def bare_lightning(cfg) -> float:
    torch.manual_seed(cfg.seed)
    module = BareModule(instantiate(cfg.model.net), cfg.model.optimizer.lr)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=False,
        callbacks=[EpochTimer()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    EpochTimer.seconds.clear()
    trainer.fit(module, datamodule=instantiate(cfg.data))
    return min(EpochTimer.seconds)


def litlab_loop(cfg) -> float:
    EpochTimer.seconds.clear()
    litlab.train(cfg)
    return min(EpochTimer.seconds)


def main() -> dict:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    rows, ratios = [], {}
    for name, override in NETS.items():
        cfg = config(override)
        plain, bare, ours = plain_loop(cfg), bare_lightning(cfg), litlab_loop(cfg)
        ratios[name] = ours / plain
        rows.append(
            f"| {name} | {plain:.2f} | {bare:.2f} ({bare / plain:.2f}x) | {ours:.2f} | "
            f"{ours / plain:.3f}x |"
        )
    table = (
        "| net (batch 32, 55k train + 5k val) | plain loop s/epoch | bare Lightning s/epoch | "
        "litlab-train s/epoch | ratio |\n|---|---:|---:|---:|---:|\n" + "\n".join(rows)
    )
    verdict = ", ".join(
        f"{n} {GOALS[n]}x: {'met' if r <= GOALS[n] else 'missed'}" for n, r in ratios.items()
    )
    write_section(
        "epoch_time",
        "Training epoch: litlab-train vs a hand-written loop",
        f"{table}\n\nGoal: at most this ratio to the plain loop ({verdict}).\n\n{NOTES}",
    )
    return ratios


if __name__ == "__main__":
    main()
