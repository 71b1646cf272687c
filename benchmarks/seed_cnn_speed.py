"""The article's CNN (sec. 4.1): `litlab-train experiment=seed_cnn` vs the article's Keras code.

Both train the same net at batch 32 on the same MNIST files. Keras runs the article's code as
written (60k training images, no validation); litlab trains on its 55k split and validates
on the other 5k within each epoch. Keras runs when a Python with TensorFlow is at hand:
`KERAS_PYTHON=/path/to/python` (e.g. a venv with `pip install tensorflow-cpu`), or this one if
it has TensorFlow. The faster epoch of each run counts (the first one includes compilation).
"""

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from report import DATA_DIR, EpochTimer, train_config, write_section

import litlab

EPOCHS = 2
DEVICE = "gpu" if torch.cuda.is_available() else "cpu"
RUNS = {
    "cpu": {
        "litlab-train eager": [],
        "litlab-train model.compile=default": ["model.compile=default"],
        "litlab-train speed=cpu": ["speed=cpu"],
    },
    "gpu": {
        "litlab-train trainer=gpu (eager)": ["trainer=gpu"],
        "litlab-train speed=gpu": ["speed=gpu"],
        "litlab-train speed=gpu model.compile=default": ["speed=gpu", "model.compile=default"],
    },
}[DEVICE]


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


def keras_run() -> dict | None:
    if DEVICE == "gpu":  # the Keras reference is the article's CPU run
        return None
    python = os.environ.get("KERAS_PYTHON")
    if python is None and importlib.util.find_spec("tensorflow"):
        python = sys.executable
    if python is None:
        return None
    script = Path(__file__).with_name("keras_seed_cnn.py")
    raw = DATA_DIR / "MNIST" / "raw"
    result = subprocess.run(
        [python, str(script), str(raw), str(EPOCHS), "32"], capture_output=True, text=True
    )
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
        rows.insert(0, row(f"Keras (TensorFlow {keras['tensorflow']}), the article's code", keras))
        fastest = min(run["seconds"] for run in runs.values())
        met = "met" if fastest <= keras["seconds"] else "missed"
        verdict = (
            f"Goal: litlab's fastest epoch at or below the Keras epoch: {fastest:.2f} s vs "
            f"{keras['seconds']:.2f} s ({fastest / keras['seconds']:.2f}x, {met})."
        )
    table = (
        f"| run (batch 32, {EPOCHS} epochs) | s/epoch | train steps/epoch | ms/step | test acc |\n"
        "|---|---:|---:|---:|---:|\n" + "\n".join(rows)
    )
    speed = (Path(litlab.CONFIG_DIR) / "speed" / f"{DEVICE}.yaml").read_text().strip()
    body = (
        f"{table}\n\n{verdict}\n\nlitlab's epoch includes validating on 5k images; its ms/step "
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
