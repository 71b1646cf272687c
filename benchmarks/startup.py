"""Start-up: how long litlab-train takes to refuse a mistake, to show its help, and to reach
its first training step, and litlab-eval to refuse a doctored run, beside importing torch and
Lightning as floors.

Each is the wall time of a fresh process, from before it is started to its exit (or, for the
first step, to the moment the first training batch starts), the median of a few runs.
`--bin DIR` measures the litlab-train (and python) in DIR instead, printing the table only.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning.pytorch import Callback
from omegaconf import open_dict
from report import DATA_DIR, write_section

HERE = Path(__file__).resolve().parent
REPEATS = 3
STEP_REPEATS = 3


class FirstStep(Callback):
    """Writes the wall-clock time at which the first training batch starts, to $FIRST_STEP."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0 and trainer.current_epoch == 0:
            Path(os.environ["FIRST_STEP"]).write_text(repr(time.time()))


def wall(command: list[str], env: dict | None = None, cwd: str | None = None) -> float:
    start = time.time()
    subprocess.run(command, env=env, cwd=cwd, capture_output=True, check=False)
    return time.time() - start


def to_first_step(train: str) -> float:
    """From starting `litlab-train` (the default experiment, the article's CNN) to its first
    training batch; the run stops after that one step."""
    with tempfile.TemporaryDirectory() as folder:
        stamp = Path(folder) / "first_step"
        env = {**os.environ, "FIRST_STEP": str(stamp), "PYTHONPATH": str(HERE)}
        start = time.time()
        subprocess.run(
            [
                train,
                f"paths.data_dir={DATA_DIR}",
                f"hydra.run.dir={folder}/run",
                "++trainer.max_steps=1",
                "++trainer.limit_val_batches=0",
                "callbacks.early_stopping=null",  # it needs a validation epoch at the end
                "test=false",
                "+callbacks.first_step._target_=startup.FirstStep",
            ],
            env=env,
            cwd=folder,
            capture_output=True,
            check=True,
        )
        return float(stamp.read_text()) - start


# row: the program in the venv and its arguments
COMMANDS = {
    '`python -c "import torch"`': ["python", "-c", "import torch"],
    '`python -c "import lightning"`': ["python", "-c", "import lightning"],
    "`litlab-train experiment=nope` (an error)": ["litlab-train", "experiment=nope"],
    "`litlab-train trainer.max_epochs=abc` (an error)": ["litlab-train", "trainer.max_epochs=abc"],
    "`litlab-train --help`": ["litlab-train", "--help"],
    "`litlab-eval run_dir=<doctored run>` (refused)": ["litlab-eval", "run_dir=run"],
}
DOCTORED = "`litlab-eval run_dir=<doctored run>` (refused)"
FIRST_STEP = "`litlab-train`: process start to first training step"
ROWS = (*COMMANDS, FIRST_STEP)


def doctored_run(folder: Path) -> Path:
    """A run of the default experiment whose config.yaml gained one key that would empty a file
    when the run is built (`litlab.config.trust` refuses it unbuilt)."""
    import litlab
    from litlab.run.directory import RunDir

    run = RunDir(folder / "run")
    cfg = litlab.compose("train", [f"paths.output_dir={run.path}"])
    with open_dict(cfg):
        cfg.data.pwn = {"_target_": "builtins.open", "file": str(folder / "PWNED"), "mode": "w"}
    run.write_config(cfg)
    run.checkpoints.mkdir()
    run.last.write_bytes(b"")
    return run.path


def measure(bin_dir: Path) -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory() as folder:  # the refusal may write nothing there
        doctored_run(Path(folder))
        rows = [
            (
                name,
                statistics.median(
                    wall([str(bin_dir / program), *args], cwd=folder) for _ in range(REPEATS)
                ),
            )
            for name, (program, *args) in COMMANDS.items()
        ]
        if (Path(folder) / "PWNED").exists():
            raise SystemExit(f"{bin_dir / 'litlab-eval'} built the doctored run")
    train = str(bin_dir / "litlab-train")
    step = statistics.median(to_first_step(train) for _ in range(STEP_REPEATS))
    return [*rows, (FIRST_STEP, step)]


def table(rows: list[tuple[str, float]]) -> str:
    floor = rows[0][1]
    lines = [f"| {name} | {seconds:.2f} | {seconds / floor:.2f}x |" for name, seconds in rows]
    return "| command | wall s | vs import torch |\n|---|---:|---:|\n" + "\n".join(lines)


def main(bin_dir: Path | None = None) -> dict:
    rows = measure(bin_dir or Path(sys.executable).parent)
    if bin_dir is not None:
        print(table(rows))
        return dict(rows)
    floor = rows[0][1]
    worst = max(seconds for name, seconds in rows[2:5])
    verdict = "met" if worst <= 2 * floor else "missed"
    doctored = dict(rows)[DOCTORED] / floor
    refused = "met" if doctored <= 0.3 else "missed"
    write_section(
        "startup",
        "Start-up: refusing a mistake or a doctored run, help, and the first training step",
        f"{table(rows)}\n\n"
        f"Medians of {REPEATS} fresh processes ({STEP_REPEATS} for the first step). Goal: a "
        f"config error or `--help` in at most 2x the wall time of importing torch ({verdict}: "
        f"the slowest {worst / floor:.2f}x). A mistake in the config is refused before torch "
        "is imported (`litlab.config.check` checks every value; no run directory is made). "
        f'Goal: refusing a doctored run (its config.yaml names `builtins.open`; design.md, "A '
        f'run from elsewhere") in at most 0.3x ({refused}: {doctored:.2f}x), also before torch: '
        "`litlab.config.trust` reads the classes a run names from their sources. "
        "`--help` spends its time in Hydra listing every config group. Importing Lightning is "
        "the floor of any run: inside it, torchmetrics imports torchvision's models and with "
        "them torch._dynamo.",
    )
    return dict(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin", type=Path, help="measure the install in this bin/ folder")
    main(parser.parse_args().bin)
