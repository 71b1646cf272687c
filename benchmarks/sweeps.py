"""Optuna searches (`hparams_search=mnist_optuna`, the MLP on a subset of MNIST): what pruning
saves, and what trials that never wait save. Each search is one `litlab-train` process.

Pruning: the same search without a pruner and with `hydra.sweeper.pruner=successive_halving`,
with each of SEEDS (the sampler's and the training's seed): the same number of trials; the
epochs all its trials trained (their metrics.csv), and the best value it found.

Scheduling: `n_jobs=2` on joblib, trials of unequal length (`trainer.max_epochs` drawn from
a choice, at random with one seed, so that both searches run the same trials): trials that start
as soon as a slot frees, against `batch_synchronous=true` (the whole batch waits for its slowest
trial, as with Hydra's sweepers); the wall time of the whole search.
"""

import csv
import datetime
import itertools
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import DATA_DIR, DOC, MEASURED, machine, write_section

TRAIN = str(Path(sys.executable).parent / "litlab-train")
SEARCH = [
    "hparams_search=mnist_optuna",
    "experiment=mlp_relu",
    "+trainer.limit_val_batches=2",  # 2,000 validation images
    "+trainer.limit_test_batches=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.run_pictures=null",
    "callbacks.early_stopping=null",  # the epochs each trial trains: the pruner's alone
    f"paths.data_dir={DATA_DIR}",
]
# Pruning: trials of EPOCHS epochs on LABELLED training images.
SEEDS, TRIALS, EPOCHS, LABELLED = (1, 2, 3), 6, 5, 2000
PRUNERS = ("null", "successive_halving")
# Scheduling: trials of 1 or LONG epochs on all 55,000 training images, two at a time.
WORKERS, TRIALS_AT_ONCE, LONG, REPEATS = 2, 12, 24, 2
SCHEDULES = {"asynchronous (default)": "false", "batch-synchronous": "true"}
ROWS = (*(f"pruner={p}" for p in PRUNERS), *SCHEDULES)


def search(sweep: Path, *overrides: str) -> float:
    """Run one search into `sweep`; its wall time."""
    start = time.perf_counter()
    done = subprocess.run(
        [TRAIN, *SEARCH, *overrides, f"hydra.sweep.dir={sweep}"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"the search in {sweep} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def trials(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def epochs(job: Path) -> int:
    """The epochs a trial's job trained: the validated ones in its metrics.csv."""
    rows = csv.DictReader((job / "csv" / "metrics.csv").open())
    return len({row["epoch"] for row in rows if row["val/acc"]})


def best_value(sweep: Path) -> float:
    line = next(x for x in (sweep / "optimization_results.yaml").open() if "best_value" in x)
    return float(line.split(":")[1])


def pruning(folder: Path) -> dict:
    """pruner -> (total epochs over the seeds, best values by seed, trials pruned)."""
    out = {}
    for pruner in PRUNERS:
        total, bests, pruned = 0, [], 0
        for seed in SEEDS:
            sweep = folder / f"{pruner}_{seed}"
            search(
                sweep,
                f"seed={seed}",
                f"data.labelled={LABELLED}",
                f"hydra.sweeper.pruner={pruner}",
                f"hydra.sweeper.n_trials={TRIALS}",
                f"trainer.max_epochs={EPOCHS}",
            )
            jobs = trials(sweep)
            assert len(jobs) == TRIALS
            total += sum(epochs(job) for job in jobs)
            pruned += sum(epochs(job) < EPOCHS for job in jobs)
            bests.append(best_value(sweep))
        out[pruner] = (total, bests, pruned)
    return out


def scheduling(folder: Path) -> dict[str, float]:
    """schedule -> the search's wall time, seconds: the least of REPEATS, the schedules taking
    turns (other work on the machine slows a search, it never speeds one)."""
    out = {name: [] for name in SCHEDULES}
    for repeat, (name, synchronous) in itertools.product(range(REPEATS), SCHEDULES.items()):
        out[name].append(
            search(
                folder / f"{name.split()[0]}_{repeat}",
                "seed=7",
                "hydra/launcher=joblib",
                f"hydra.launcher.n_jobs={WORKERS}",
                f"hydra.sweeper.n_jobs={WORKERS}",
                f"hydra.sweeper.n_trials={TRIALS_AT_ONCE}",
                f"hydra.sweeper.batch_synchronous={synchronous}",
                "hydra.sweeper.sampler.n_startup_trials=100",  # random: the same trials in both
                f"trainer.max_epochs=choice(1, {LONG})",
            )
        )
    lengths = [epochs(job) for job in trials(folder / "asynchronous_0")]
    assert lengths == [epochs(job) for job in trials(folder / "batch-synchronous_0")], lengths
    return {**{name: min(times) for name, times in out.items()}, "lengths": lengths}


# Accuracy against size: PARETO_TRIALS trials of one epoch on LABELLED images, both searches.
PARETO_TRIALS = 8
WIDTHS = [
    "model.net.hidden.0=range(16, 256, step=16)",
    "model.net.hidden.1=range(16, 128, step=16)",
]
# The search config's other params, fixed: a key fixed on the command line is not searched.
FIXED = ["model.optimizer.lr=0.03", "data.batch_size=64"]
PICTURE = DOC.parent / "sweeps_pareto.png"


def pareto(folder: Path) -> str:
    """The two-objective search beside the accuracy-only one: the body of its part."""
    from omegaconf import OmegaConf

    from litlab.sweeps.report import pareto_front, plot_front

    both = ["val/acc_best", "model/params"]
    runs = {}
    for name, objectives in (("accuracy", "val/acc_best"), ("both", f"[{','.join(both)}]")):
        sweep = folder / f"pareto_{name}"
        runs[name] = search(
            sweep,
            "seed=3",
            f"data.labelled={LABELLED}",
            "trainer.max_epochs=1",
            f"hydra.sweeper.n_trials={PARETO_TRIALS}",
            f"optimized_metric={objectives}",
            *FIXED,
            *WIDTHS,
        )
    points = {}
    for job in trials(folder / "pareto_both"):
        metrics = OmegaConf.load(job / "metrics.json").metrics
        points[job.name] = [metrics["val/acc_best"], metrics["model/params"]]
    front = pareto_front(points, ["max", "min"])
    results = OmegaConf.load(folder / "pareto_both" / "optimization_results.yaml")
    assert {str(s.trial) for s in results.solutions} == front  # the sweeper's front, recomputed
    plot_front(points, both, PICTURE)
    single = folder / "pareto_accuracy"
    best = OmegaConf.load(single / "optimization_results.yaml")
    best_job = trials(single)[
        [OmegaConf.load(j / "metrics.json").metrics["val/acc_best"] for j in trials(single)].index(
            best.best_value
        )
    ]
    best_size = OmegaConf.load(best_job / "metrics.json").metrics["model/params"]
    smallest = min(front, key=lambda n: points[n][1])
    rows = "\n".join(
        f"| {n} | {points[n][0]:.4f} | {points[n][1]:,.0f} |"
        for n in sorted(front, key=lambda n: points[n][1])
    )
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""\
<!-- pareto:start -->
Accuracy against size, measured {stamp} at {MEASURED} on {machine()}: {PARETO_TRIALS} trials of \
one epoch on {LABELLED} images, the MLP's widths `hidden.0=range(16, 256, step=16)` and \
`hidden.1=range(16, 128, step=16)`, TPE with seed 3; {runs["both"]:.0f} s for the two-objective \
search, {runs["accuracy"]:.0f} s for the accuracy-only one.

| trial on the front | val/acc_best | parameters |
|---|---:|---:|
{rows}

![the Pareto front](sweeps_pareto.png)

The accuracy-only search's best (val/acc_best {best.best_value:.4f}) has {best_size:,.0f} \
parameters; the front's smallest net (trial {smallest}) has {points[smallest][1] / best_size:.2f}x \
as many, at {points[smallest][0] - best.best_value:+.4f} val/acc_best. With {PARETO_TRIALS} \
trials, fewer than TPE's 10 random start-up trials, both searches draw their widths at random \
from the same seed: the two-objective search ranks such draws by two objectives, it does not \
search better.
<!-- pareto:end -->
"""


def splice_pareto(body: str) -> None:
    """Put the accuracy-against-size part into the sweeps section as it stands."""
    text = DOC.read_text()
    pattern = re.compile(r"<!-- pareto:start -->.*?<!-- pareto:end -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text)
    else:
        text = text.replace("<!-- sweeps:end -->", f"\n{body}<!-- sweeps:end -->")
    DOC.write_text(text)
    print(body)


def main() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        timed = scheduling(Path(folder))
        pruned = pruning(Path(folder))
        front = pareto(Path(folder))
    full, cut = pruned["null"], pruned["successive_halving"]
    spread = max(full[1]) - min(full[1])
    gap = statistics.mean(full[1]) - statistics.mean(cut[1])
    epoch_ratio = cut[0] / full[0]
    rows = "\n".join(
        f"| pruner={p} | {pruned[p][0]} | {pruned[p][2]} | "
        f"{statistics.mean(pruned[p][1]):.4f} ({min(pruned[p][1]):.4f}-{max(pruned[p][1]):.4f}) |"
        for p in PRUNERS
    )
    async_s, sync_s = timed["asynchronous (default)"], timed["batch-synchronous"]
    wall_ratio = async_s / sync_s
    body = f"""\
`experiment=mlp_relu data.labelled={LABELLED}`, {TRIALS} trials of {EPOCHS} epochs per search, one
search per seed ({", ".join(map(str, SEEDS))}: the sampler's and the training's); best
val/acc_best as mean (min-max) over the seeds.

| search | epochs trained, all seeds | trials pruned | best val/acc_best |
|---|---:|---:|---:|
{rows}

Pruning trains {epoch_ratio:.2f}x the epochs (goal: at most 0.6x, \
{"met" if epoch_ratio <= 0.6 else "missed"}); its best value differs from the unpruned \
search's by {-gap:+.4f} on the mean, {"within" if abs(gap) <= spread else "outside"} the \
seed-to-seed spread of the unpruned search's best ({spread:.4f}).

`hydra/launcher=joblib`, {WORKERS} workers, {TRIALS_AT_ONCE} trials on all training images, of \
{" / ".join(map(str, timed["lengths"]))} epochs (`trainer.max_epochs=choice(1, {LONG})`, \
the same in both):

| trials | search wall time (s), least of {REPEATS} |
|---|---:|
| asynchronous (default) | {async_s:.1f} |
| batch-synchronous | {sync_s:.1f} |

Asynchronous trials take {wall_ratio:.2f}x the wall time (goal: at most 0.8x, \
{"met" if wall_ratio <= 0.8 else "missed"}).

{front}"""
    write_section("sweeps", "Optuna searches: pruning and trials that never wait", body)
    return {"pruning": pruned, "scheduling": timed}


if __name__ == "__main__":
    if sys.argv[1:] == ["--pareto"]:
        with tempfile.TemporaryDirectory() as folder:
            splice_pareto(pareto(Path(folder)))
    else:
        main()
