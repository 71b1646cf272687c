"""`experiment=speedrun` (one epoch) beside `experiment=seed_cnn` (the article's 5 epochs).

Both on the same device settings (`speed=cpu`, or `speed=gpu` on a GPU), 5 held-out seeds
each: the training time (its epochs, their validation included), the whole `litlab-train` process
for the first seed (start-up, fit, test and writing the run), and the test accuracy.
"""

import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from report import DATA_DIR, EpochTimer, train_config, write_section

import litlab

SEEDS = (101, 102, 103, 104, 105)
SPEED = "speed=gpu" if torch.cuda.is_available() else "speed=cpu"
EXPERIMENTS = ("speedrun", "seed_cnn")
ROWS = tuple(f"`experiment={e} {s}`" for s in ("speed=cpu", "speed=gpu") for e in EXPERIMENTS)


def process_seconds(experiment: str) -> float:
    command = [
        str(Path(sys.executable).parent / "litlab-train"),
        f"experiment={experiment}",
        SPEED,
        f"seed={SEEDS[0]}",
        f"paths.data_dir={DATA_DIR}",
        f"hydra.run.dir={tempfile.mkdtemp()}",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> dict:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    results = {}
    for experiment in EXPERIMENTS:
        accuracy, fit = [], []
        for seed in SEEDS:
            EpochTimer.seconds.clear()
            cfg = train_config(
                f"experiment={experiment}",
                SPEED,
                f"seed={seed}",
                "+callbacks.epoch_timer._target_=report.EpochTimer",
            )
            accuracy.append(litlab.train(cfg)["test/acc"])
            fit.append(sum(EpochTimer.seconds))
        results[experiment] = {
            "fit": statistics.mean(fit),
            "process": process_seconds(experiment),
            "acc": accuracy,
        }
    fast, slow = results["speedrun"], results["seed_cnn"]
    rows = "\n".join(
        f"| `experiment={name} {SPEED}` | {r['fit']:.1f} | {r['process']:.1f} | "
        f"{statistics.mean(r['acc']):.4f} | {min(r['acc']):.4f} | {max(r['acc']):.4f} |"
        for name, r in results.items()
    )
    ratio = fast["fit"] / slow["fit"]
    accurate = statistics.mean(fast["acc"]) >= 0.990 and min(fast["acc"]) >= 0.989
    body = f"""\
| run | training s (mean) | whole process s | test acc mean | min | max |
|---|---:|---:|---:|---:|---:|
{rows}

Seeds {", ".join(map(str, SEEDS))}. Goals: mean test accuracy >= 0.990 with every seed >= 0.989
({"met" if accurate else "missed"}); training time at most 1/10 of `experiment=seed_cnn`'s:
{ratio:.3f}x ({"met" if ratio <= 0.1 else "missed"}).
"""
    write_section("speedrun", "MNIST speedrun: experiment=speedrun vs the article's CNN", body)
    return results


if __name__ == "__main__":
    main()
