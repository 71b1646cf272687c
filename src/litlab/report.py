"""The jobs of a sweep side by side: a ranked table, `report.csv`, and one plot per swept parameter.

A sweep (`litlab-train -m ...`) writes `<multirun>/<job>/` per job, holding Hydra's
`.hydra/overrides.yaml` and litlab's `metrics.json`; that is all this reads.
"""

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from litlab import objective
from litlab.errors import LitlabError
from litlab.files import atomic_write, replacing
from litlab.rundir import RunDir


@dataclass
class Job:
    name: str  # the job's directory, relative to the multirun directory
    params: dict[str, str]  # override key -> value, as typed or sampled
    metrics: dict[str, float] = field(default_factory=dict)  # empty: the job did not finish
    optimized_metric: str | None = None


@dataclass
class Report:
    metric: str
    mode: str  # "max" or "min": which end ranks first
    params: list[str]  # the swept parameters
    jobs: list[Job]  # finished jobs best first, then unfinished ones
    csv: Path
    plots: list[Path]


def read_jobs(multirun_dir: Path) -> list[Job]:
    """Every job directory below `multirun_dir` (those holding `.hydra/overrides.yaml`)."""
    multirun_dir = Path(multirun_dir)
    if not multirun_dir.is_dir():
        raise LitlabError(f"no directory {multirun_dir}; pass a sweep's logs/train/multiruns/<dir>")
    jobs = []
    for overrides in sorted(multirun_dir.glob("**/.hydra/overrides.yaml")):
        job_dir = overrides.parent.parent
        params = {}
        for override in OmegaConf.load(overrides):
            key, _, value = str(override).partition("=")
            params[key.lstrip("+~")] = value
        run = RunDir(job_dir)
        job = Job(job_dir.relative_to(multirun_dir).as_posix(), params, run.metrics())
        if run.config_file.is_file():
            job.optimized_metric = run.config().get("optimized_metric")
        jobs.append(job)
    if not jobs:
        raise LitlabError(
            f"{multirun_dir} holds no jobs (no <job>/.hydra/overrides.yaml); pass the directory "
            "a sweep (litlab-train -m ...) wrote"
        )
    return sorted(jobs, key=lambda job: _natural(job.name))


def _natural(name: str) -> list[tuple]:
    """Job 2 before job 10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("/")]


def swept(jobs: list[Job]) -> list[str]:
    """The parameters whose values differ between jobs, in command-line order."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.params))
    return [key for key in keys if len({job.params.get(key) for job in jobs}) > 1]


def number(value: str | None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def ranked(jobs: list[Job], metric: str, mode: str) -> list[Job]:
    """Finished jobs best first, then those without the metric in their original order."""
    done = [job for job in jobs if metric in job.metrics]
    done.sort(key=lambda job: job.metrics[metric], reverse=mode == "max")
    return done + [job for job in jobs if metric not in job.metrics]


def default_metric(jobs: list[Job]) -> str:
    """The metric the sweep optimized (`optimized_metric`), else validation accuracy or loss."""
    names = {name for job in jobs for name in job.metrics}
    for name in [*(job.optimized_metric for job in jobs), "val/acc_best", "val/loss_best"]:
        if name in names:
            return name
    raise LitlabError("no job has finished (no metrics.json yet); wait for the sweep")


def write_csv(jobs: list[Job], params: list[str], path: Path) -> Path:
    """One row per job (in the given order): its swept parameters, then every metric."""
    metrics = sorted({name for job in jobs for name in job.metrics})
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["job", *params, *metrics])
    for job in jobs:
        row = [job.params.get(key, "") for key in params]
        writer.writerow([job.name, *row, *(job.metrics.get(m, "") for m in metrics)])
    return atomic_write(path, text.getvalue())


def plot(jobs: list[Job], param: str, metric: str, path: Path) -> Path:
    """`metric` against one swept parameter: a numeric axis (log when it spans a decade or
    more), else one column per value."""
    from matplotlib.figure import Figure  # no pyplot: no backend to pick, nothing global

    done = [job for job in jobs if metric in job.metrics]
    values = [job.params.get(param) for job in done]
    numbers = [number(v) for v in values]
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    if all(n is not None for n in numbers):
        ax.scatter(numbers, [job.metrics[metric] for job in done])
        positive = [n for n in numbers if n > 0]
        if len(positive) == len(numbers) and max(positive) >= 10 * min(positive):
            ax.set_xscale("log")
    else:
        categories = list(dict.fromkeys(str(v) for v in values))
        xs = [categories.index(str(v)) for v in values]
        ax.scatter(xs, [job.metrics[metric] for job in done])
        ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by {param} ({len(done)} jobs)")
    ax.grid(alpha=0.3)
    with replacing(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    return path


def make_report(multirun_dir: Path, metric: str | None = None, mode: str | None = None) -> Report:
    """Read a sweep, rank its jobs by `metric` (by default the one it optimized), and write
    `report.csv` and `report_<param>.png` into `multirun_dir`."""
    multirun_dir = Path(multirun_dir)
    jobs = read_jobs(multirun_dir)
    metric = metric or default_metric(jobs)
    if not any(metric in job.metrics for job in jobs):
        known = sorted({name for job in jobs for name in job.metrics})
        raise LitlabError(f"no job logged {metric}; choose one of {', '.join(known) or 'none'}")
    mode = mode or objective.mode(metric)
    if mode not in ("min", "max"):
        raise LitlabError(f"mode={mode} must be min or max")
    params = swept(jobs)
    jobs = ranked(jobs, metric, mode)
    plots = [
        plot(jobs, param, metric, multirun_dir / f"report_{param.replace('/', '_')}.png")
        for param in params
    ]
    table = write_csv(jobs, params, multirun_dir / "report.csv")
    return Report(metric, mode, params, jobs, table, plots)
