"""Epoch time: `litlab.train` (what litlab-train runs) vs a hand-written PyTorch loop.

Same net, same in-memory data and split, Adam, batch 32, a validation pass per epoch on both
sides; litlab keeps its default callbacks (checkpointing, early stopping, rich progress bar,
model summary, run pictures) and CSV logger. The faster of two epochs is reported for each side.
"""

import logging
import time
from contextlib import contextmanager

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
from report import EpochTimer, synchronize, timed, train_config, write_section

import litlab
from litlab.data import InMemoryImages
from litlab.speed import ask_cuda_without_nvml_where_no_driver

NOTES = """\
*Bare Lightning* is a minimal LightningModule with the same net and optimizer, in Lightning's
automatic optimization, and no logger, callbacks or metrics: the difference to the plain loop is
Lightning's loop itself (closure, hooks, fetcher, progress counters), a fixed cost per step that
a small net's step at batch 32 cannot hide. litlab takes the optimizer step right after a
model's training step (`litlab.speed.Speed`, the callback every LitModule hands its Trainer:
manual optimization, still through Lightning's optimizer, precision plugin and strategy, so
mixed precision and DDP hold), which skips the closure and the hooks around it; only where the
Trainer clips or accumulates gradients does it leave the step to Lightning's loop. Models add each
batch's loss and accuracy to running sums on the device and hand those to torchmetrics once an
epoch: no torchmetrics update, `self.log` or host sync per step. litlab keeps its checkpointing,
early stopping, run pictures, random-state callback, CSV logger and a progress bar fed every 50
batches (Lightning's stock rich bar recomputed every displayed metric after each batch and
redrew 20 times a second). Lightning calls every batch hook on every callback; litlab's trainer
takes away the hooks a callback leaves empty, so only the checkpoint and the bar are called per
batch. Without an NVIDIA driver, every side here asks torch for a GPU without NVML, as
litlab-train does (Lightning's NVML check otherwise fails and is tried again at each optimizer
step)."""

PROFILE_NOTES = """\
*Where a step goes* (the second table, the MLP): the same functions timed on both sides over the
training steps of the run above. "Everything else" is, in the plain loop, the loss and zeroing
the gradients; in litlab-train also Lightning's loop around the step (its fetcher over the
`DataLoader`, the module hooks around each batch, the logger connector, the optimizer wrapper and
precision plugin around backward and the step) and litlab's per-step loss and accuracy sums.
Wall times on this shared 2-core machine vary by several percent from run to run."""

DEVICE = "gpu" if torch.cuda.is_available() else "cpu"  # on a GPU: bash benchmarks/gpu.sh --all
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
        f"trainer={DEVICE}",
    )


def plain_loop(cfg) -> float:
    """The loop a researcher would write by hand, over the same data tensors."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    device = torch.device("cuda" if DEVICE == "gpu" else "cpu")
    train, val = (datamodule.splits[split].to(device) for split in ("train", "val"))
    net = instantiate(cfg.model.net).to(device)
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
            synchronize(device)

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
        accelerator=DEVICE,
        devices=1,
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


@contextmanager
def stopwatch(step: tuple[object, str], parts: dict[str, tuple[object, str]]):
    """Times the method `step` (class, name) and, inside it, each of `parts` (name: (class,
    method)); yields a dict that holds, once the block ends, microseconds per step of each."""
    seconds = dict.fromkeys(["whole step", *parts], 0.0)
    calls, inside, per_step = [0], [False], {}

    def timing(name, fn):
        def timed_call(*args, **kwargs):
            if name != "whole step" and not inside[0]:
                return fn(*args, **kwargs)
            inside[0], start = True, time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
                if name == "whole step":
                    inside[0], calls[0] = False, calls[0] + 1

        return timed_call

    methods = {"whole step": step, **parts}
    originals = {name: getattr(owner, method) for name, (owner, method) in methods.items()}
    for name, (owner, method) in methods.items():
        setattr(owner, method, timing(name, originals[name]))
    try:
        yield per_step
    finally:
        for name, (owner, method) in methods.items():
            setattr(owner, method, originals[name])
    per_step.update({name: total / calls[0] * 1e6 for name, total in seconds.items()})
    per_step["everything else"] = per_step["whole step"] - sum(per_step[n] for n in parts)


class PlainStep:
    """The plain loop's training step, as a method the stopwatch can time."""

    def __init__(self, cfg, train):
        self.train, self.net = train, instantiate(cfg.model.net)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.model.optimizer.lr)

    def __call__(self, index):
        x, y = self.train.__getitems__(index)
        loss = F.cross_entropy(self.net(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def step_profile(cfg) -> str:
    """Where a training step's time goes, in the plain loop and in litlab-train: the same
    functions timed on both sides, per training step (an epoch of the plain loop, a run of
    litlab-train with `cfg`)."""
    parts = {
        "cut the batch from the images": (InMemoryImages, "__getitems__"),
        "the net's forward": (get_class(cfg.model.net._target_), "forward"),
        "backward": (torch.Tensor, "backward"),
        "Adam's step": (torch.optim.Adam, "step"),
    }
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    train = datamodule.splits["train"]
    plain_step = PlainStep(cfg, train)
    with stopwatch((PlainStep, "__call__"), parts) as plain:
        for index in torch.randperm(len(train)).split(cfg.data.batch_size):
            plain_step(index)
    with stopwatch((_TrainingEpochLoop, "advance"), parts) as ours:
        litlab.train(cfg)
    rows = [f"| {name} | {plain[name]:.0f} | {ours[name]:.0f} |" for name in plain]
    return (
        "| where a training step goes (MLP) | plain loop µs | litlab-train µs |\n|---|---:|---:|\n"
        + "\n".join(rows)
    )


def main() -> dict:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    ask_cuda_without_nvml_where_no_driver()  # as litlab-train does: every side's steps alike
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
    if DEVICE == "gpu":  # a CUDA kernel's time is not its Python call's: no step profile
        write_section(
            "epoch_time_gpu",
            "Training epoch on a GPU: litlab-train vs a hand-written loop",
            f"{table}\n\nThe goals are the CPU's (section above); here the data lives on the GPU "
            f"on every side.\n\n{NOTES}",
        )
        return ratios
    profile = step_profile(config(NETS["MLP"]))
    verdict = ", ".join(
        f"{n} {GOALS[n]}x: {'met' if r <= GOALS[n] else 'missed'}" for n, r in ratios.items()
    )
    write_section(
        "epoch_time",
        "Training epoch: litlab-train vs a hand-written loop",
        f"{table}\n\nGoal: at most this ratio to the plain loop ({verdict}).\n\n{profile}\n\n"
        f"{NOTES}\n\n{PROFILE_NOTES}",
    )
    return ratios


if __name__ == "__main__":
    main()
