"""The article's CNN (sec. 4.1): `litlab-train experiment=seed_cnn` vs the article's Keras code.

Both do the same work: the same net at batch 32 on litlab's 55k split of the MNIST training
files, validating on the other 5k within each epoch, in fp32. The headline compares the preset a
user picks, `speed=cpu`, held to fp32, with the article's Keras code; where the CPU computes
bf16 natively, `speed=cpu` as it stands (bf16 autocast) is a row of its own. Keras runs when a
Python with TensorFlow is at hand: `KERAS_PYTHON=/path/to/python` (e.g. a venv with
`pip install tensorflow-cpu`), or this one if it has TensorFlow. The faster epoch of each run
counts (the first one includes compilation).
"""

import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from report import DATA_DIR, EpochTimer, train_config, write_section

import litlab
from litlab.config.resolvers import fastest_cpu_precision
from litlab.errors import LitlabError

EPOCHS = 2
DEVICE = "gpu" if torch.cuda.is_available() else "cpu"
HEADLINE = "litlab-train speed=cpu trainer.precision=32-true"
BF16 = "litlab-train speed=cpu (bf16 autocast on this CPU)"  # where the CPU has bf16
ALL_RUNS = {
    "cpu": {
        "litlab-train eager": [],
        "litlab-train model.compile=default": ["model.compile=default"],
        HEADLINE: ["speed=cpu", "trainer.precision=32-true"],
        BF16: ["speed=cpu"],
    },
    "gpu": {
        "litlab-train trainer=gpu (eager)": ["trainer=gpu"],
        "litlab-train speed=gpu": ["speed=gpu"],
        "litlab-train speed=gpu model.compile=default": ["speed=gpu", "model.compile=default"],
    },
}
RUNS = {
    name: overrides
    for name, overrides in ALL_RUNS[DEVICE].items()
    if name != BF16 or fastest_cpu_precision() == "bf16-mixed"
}
KERAS = "Keras, the article's code"
ROWS = (KERAS, *ALL_RUNS["cpu"], *ALL_RUNS["gpu"])


def litlab_run(overrides: list[str]) -> dict:
    cfg = train_config(
        "experiment=seed_cnn",
        f"trainer.max_epochs={EPOCHS}",
        "+callbacks.epoch_timer._target_=report.EpochTimer",
        *overrides,
    )
    EpochTimer.seconds.clear()
    metrics = litlab.train(cfg)
    steps = -(-55_000 // cfg.data.batch_size)
    return {"seconds": min(EpochTimer.seconds), "test_acc": metrics["test/acc"], "steps": steps}


def litlab_split() -> tuple[Path, int]:
    """The order of the training images in litlab's split (validation first), as a .npy file,
    and the validation size."""
    cfg = train_config("experiment=seed_cnn")
    dm = instantiate(cfg.data)
    dm.setup()
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(cfg.data.seed))
    labels = dm.load_split("train")[1]
    val = cfg.data.val_size
    # the same split as MNISTDataModule.setup draws
    assert torch.equal(labels[order[:val]], dm.splits["val"].labels)
    assert torch.equal(labels[order[val:]], dm.splits["train"].labels)
    path = Path(tempfile.mkdtemp()) / "split.npy"
    np.save(path, order.numpy())
    return path, val


def keras_run() -> dict | None:
    if DEVICE == "gpu":  # the Keras reference is the article's CPU run
        return None
    python = os.environ.get("KERAS_PYTHON")
    if python is None and importlib.util.find_spec("tensorflow"):
        python = sys.executable
    if python is None:
        return None
    if not Path(python).is_file():
        raise LitlabError(
            f"KERAS_PYTHON={python} is no file; make one with `python3 -m venv tf && "
            "tf/bin/pip install tensorflow-cpu` and pass KERAS_PYTHON=tf/bin/python"
        )
    script = Path(__file__).with_name("keras_seed_cnn.py")
    raw = DATA_DIR / "MNIST" / "raw"
    split, val_size = litlab_split()
    command = [python, str(script), str(raw), str(split), str(val_size), str(EPOCHS), "32"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"the Keras reference failed:\n{result.stderr[-2000:]}")
    run = json.loads(result.stdout.strip().splitlines()[-1])
    return run | {"seconds": min(run["seconds"])}


def row(name: str, run: dict) -> str:
    ms = 1e3 * run["seconds"] / run["steps"]
    return (
        f"| {name} | {run['seconds']:.2f} | {run['steps']:,} | {ms:.2f} | {run['test_acc']:.4f} |"
    )


def main() -> dict:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    runs = {name: litlab_run(overrides) for name, overrides in RUNS.items()}
    keras = keras_run()
    rows = [row(name, run) for name, run in runs.items()]
    if DEVICE == "gpu":
        verdict = "The Keras reference runs on the CPU only (section above)."
    elif keras is None:
        verdict = "Keras was not run: set KERAS_PYTHON to a Python with tensorflow-cpu."
    else:
        rows.insert(0, row(KERAS, keras))
        ours = runs[HEADLINE]["seconds"]
        met = "met" if ours <= keras["seconds"] else "missed"
        verdict = (
            f"Goal: `{HEADLINE.removeprefix('litlab-train ')}`'s epoch at or below the Keras "
            f"epoch: {ours:.2f} s vs {keras['seconds']:.2f} s ({ours / keras['seconds']:.2f}x, "
            f"{met}). Keras ran on TensorFlow {keras['tensorflow']}."
        )
    table = (
        f"| run (batch 32, {EPOCHS} epochs) | s/epoch | train steps/epoch | ms/step | test acc |\n"
        "|---|---:|---:|---:|---:|\n" + "\n".join(rows)
    )
    speed = (Path(litlab.CONFIG_DIR) / "speed" / f"{DEVICE}.yaml").read_text().strip()
    body = (
        f"{table}\n\n{verdict}\n\nEach epoch trains on 55k images and validates on 5k; ms/step "
        f"is the epoch over the training steps. `speed={DEVICE}` is:\n\n```yaml\n{speed}\n```"
    )
    name, title = {
        "cpu": ("seed_cnn_speed", "The article's CNN: litlab-train vs the article's Keras code"),
        "gpu": ("seed_cnn_speed_gpu", "The article's CNN: litlab-train on a GPU"),
    }[DEVICE]
    write_section(name, title, body)
    return {"keras": keras, **runs}


if __name__ == "__main__":
    main()
