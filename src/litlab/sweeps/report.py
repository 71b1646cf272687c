"""The jobs of a sweep side by side: a ranked table, `report.csv`, and one plot per swept parameter.

A sweep (`litlab-train -m ...`) writes `<multirun>/<job>/` per job, holding Hydra's
`.hydra/overrides.yaml` and litlab's `metrics.json`; that is all this reads. When the sweep
varies `seed`, the jobs that differ only in their seed make one configuration, and the report
ranks configurations by their mean over seeds, with a 95% confidence interval
(`litlab.sweeps.stats`).
"""

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from litlab import objective
from litlab.errors import LitlabError
from litlab.files import atomic_write, replacing
from litlab.run.directory import RunDir
from litlab.run.supervisor import read_killed
from litlab.sweeps.stats import Summary, summarize

SEED = "seed"  # the override that repeats a configuration


@dataclass
class Job:
    name: str  # the job's directory, relative to the multirun directory
    params: dict[str, str]  # override key -> value, as typed or sampled
    metrics: dict[str, float] = field(default_factory=dict)  # empty: the job did not finish
    optimized_metric: list[str] | None = None  # the metrics its search optimized
    # "unfinished": no metrics.json yet; "failed": it ended with an error (error.txt); "pruned":
    # stopped by Optuna; "killed, likely out of memory (peak 1.2 GiB)": its process killed by a
    # signal (litlab.run.supervisor)
    status: str = "finished"


@dataclass
class Config:
    """The jobs of one configuration: the same overrides but `seed`."""

    params: dict[str, str]  # its overrides but seed
    jobs: list[Job]  # those that logged the metric, by seed
    missing: list[Job]  # those that did not, left out of `stats`
    stats: Summary | None  # the metric over `jobs`; None when none logged it

    @property
    def seeds(self) -> list[str]:
        return [job.params.get(SEED, "") for job in self.jobs]


@dataclass
class Comparison:
    """Two configurations seed by seed, on the seeds both logged the metric on."""

    metric: str
    mode: str  # "max" or "min": which end is the better
    names: tuple[str, str]  # as asked for, e.g. "model.optimizer.lr=0.01"
    configs: tuple[Config, Config]
    seeds: list[str]
    difference: Summary  # of the first's metric minus the second's, seed by seed
    wins: tuple[int, int]  # on how many seeds each is the better (by the mode); the rest tie

    def text(self) -> str:
        """The comparison in words, saying plainly whether the interval holds 0."""
        d = self.difference
        seeds = f"the {d.n} seeds" if d.n > 1 else "the one seed"
        if any(self.seeds):  # a sweep that does not set the seed runs one, unnamed
            seeds += f" ({', '.join(self.seeds)})"
        if d.n > 1:
            value = f"mean {d.mean:+.4f}, 95% interval [{d.low:+.4f}, {d.high:+.4f}]"
        else:
            value = f"{d.mean:+.4f}"
        if d.n == 1:
            verdict = "One seed gives no interval: sweep more seeds (e.g. seed=1,2,3)."
        elif d.excludes(0):
            better = "A" if (d.mean > 0) == (self.mode == "max") else "B"
            verdict = f"The interval excludes 0: {better} is the better over these seeds."
        else:
            verdict = "The interval includes 0: these seeds do not show either one better."
        return "\n".join(
            [
                f"A: {self.names[0]}",
                f"B: {self.names[1]}",
                f"{self.metric}, A minus B on {seeds} both ran: {value}",
                f"A is the better on {self.wins[0]}, B on {self.wins[1]}, "
                f"tied on {d.n - sum(self.wins)}.",
                verdict,
            ]
        )


@dataclass
class Report:
    metric: str
    mode: str  # "max" or "min": which end ranks first
    params: list[str]  # the swept parameters
    jobs: list[Job]  # finished jobs best first, then unfinished ones
    configs: list[Config]  # best mean first, then those without the metric
    csv: Path
    plots: list[Path]
    comparison: Comparison | None = None
    objectives: list[str] = field(default_factory=list)  # a multi-objective search's metrics
    front: set[str] = field(default_factory=set)  # the jobs on its Pareto front

    @property
    def by_seed(self) -> bool:
        """Whether the sweep varies the seed: then its table and plots are of configurations."""
        return SEED in self.params

    @property
    def config_params(self) -> list[str]:
        """The swept parameters that tell configurations apart."""
        return [key for key in self.params if key != SEED]


def read_jobs(multirun_dir: Path, trust_run: bool = False) -> list[Job]:
    """Every job directory below `multirun_dir` (those holding `.hydra/overrides.yaml`); each
    job's config is checked as any run's from elsewhere (`trust_run`: litlab.config.trust)."""
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
        metrics = run.metrics()
        status = "pruned" if run.pruned() else "finished" if metrics else "unfinished"
        if status == "unfinished":
            status = read_killed(job_dir) or ("failed" if run.failure() is not None else status)
        job = Job(job_dir.relative_to(multirun_dir).as_posix(), params, metrics, status=status)
        if run.config_file.is_file():
            config = run.config(trust_run)
            optimized = config.get("optimized_metric")
            job.optimized_metric = objective.objectives(optimized) if optimized else None
            job.params = ran_with(config, params)
        jobs.append(job)
    if not jobs:
        raise LitlabError(
            f"{multirun_dir} holds no jobs (no <job>/.hydra/overrides.yaml); pass the directory "
            "a sweep (litlab-train -m ...) wrote"
        )
    return sorted(jobs, key=lambda job: _natural(job.name))


def ran_with(config, params: dict[str, str]) -> dict[str, str]:
    """A job's overrides with the values its own config ran with, where a later override (or
    the config itself) gave a key another value than the one typed or sampled."""
    ran = {}
    for key, value in params.items():
        used = OmegaConf.select(config, key, default=None)
        scalar = used is not None and not OmegaConf.is_config(used)
        ran[key] = str(used) if scalar and not _same(str(used), value) else value
    return ran


def _natural(name: str) -> list[tuple]:
    """Job 2 before job 10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("/")]


def swept(jobs: list[Job]) -> list[str]:
    """The parameters whose values differ between jobs, in command-line order."""
    return varying([job.params for job in jobs])


def varying(params: list[dict[str, str]]) -> list[str]:
    """The keys whose values differ between `params`, in order of first appearance."""
    keys = list(dict.fromkeys(key for each in params for key in each))
    return [key for key in keys if len({each.get(key) for each in params}) > 1]


def number(value: str | None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def scored(job: Job, metric: str) -> bool:
    """Whether `job` counts in the ranking: it finished (not pruned) and logged `metric`."""
    return job.status == "finished" and metric in job.metrics


def ranked(jobs: list[Job], metric: str, mode: str) -> list[Job]:
    """Finished jobs best first, then those without the metric in their original order."""
    done = [job for job in jobs if scored(job, metric)]
    done.sort(key=lambda job: job.metrics[metric], reverse=mode == "max")
    return done + [job for job in jobs if not scored(job, metric)]


def configurations(jobs: list[Job], metric: str, mode: str) -> list[Config]:
    """The jobs grouped by their overrides but `seed`, best mean first, then the configurations
    no job of which logged `metric`."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        params = {key: value for key, value in job.params.items() if key != SEED}
        groups.setdefault(tuple(sorted(params.items())), []).append(job)
    configs = []
    for key, members in groups.items():
        members = sorted(members, key=lambda job: _seed_order(job.params.get(SEED)))
        done = [job for job in members if scored(job, metric)]
        stats = summarize([job.metrics[metric] for job in done]) if done else None
        missing = [job for job in members if not scored(job, metric)]
        configs.append(Config(dict(key), done, missing, stats))
    with_stats = [config for config in configs if config.stats]
    with_stats.sort(key=lambda config: config.stats.mean, reverse=mode == "max")
    return with_stats + [config for config in configs if not config.stats]


def _seed_order(seed: str | None) -> tuple:
    """Seed 2 before seed 10."""
    return (0, number(seed), "") if number(seed) is not None else (1, 0, str(seed))


def select(configs: list[Config], asked: str) -> Config:
    """The one configuration whose overrides hold every `key=value` of `asked` (space-separated;
    numbers match by value, so 1e-2 is 0.01)."""
    parts = [part.partition("=") for part in asked.split()]
    if not parts or any(not key or not sep for key, sep, _ in parts):
        raise LitlabError(
            f"--compare {asked!r}: name a configuration as key=value, e.g. model.optimizer.lr=0.01"
        )
    pairs = {key.lstrip("+~"): value for key, _, value in parts}
    known = sorted({key for config in configs for key in config.params})
    if SEED in pairs:
        raise LitlabError(
            f"--compare {asked!r}: a configuration is compared over its seeds; leave seed= out"
        )
    unknown = sorted(pairs.keys() - set(known))
    if unknown:
        raise LitlabError(
            f"--compare {asked!r}: no job sets {unknown[0]}; "
            f"they set {', '.join(known) or 'only seed'}"
        )
    found = [c for c in configs if all(_same(c.params[k], v) for k, v in pairs.items())]
    if not found:
        there = "; ".join(
            f"{key} is one of {', '.join(sorted({c.params[key] for c in configs}))}"
            for key in pairs
        )
        raise LitlabError(f"--compare {asked!r}: the sweep holds no such configuration ({there})")
    if len(found) > 1:
        apart = " ".join(
            f"{key}={found[0].params[key]}" for key in varying([c.params for c in found])
        )
        raise LitlabError(
            f"--compare {asked!r} matches {len(found)} configurations; "
            f"name one, e.g. '{asked} {apart}'"
        )
    return found[0]


def _same(value: str, asked: str) -> bool:
    return value == asked or (number(value) is not None and number(value) == number(asked))


def paired(configs: list[Config], first: str, second: str, metric: str, mode: str) -> Comparison:
    """The configurations named `first` and `second` (see `select`) seed by seed: the mean of
    their difference with its 95% interval, and on how many seeds each is the better."""
    a, b = select(configs, first), select(configs, second)
    if a is b:
        raise LitlabError(f"--compare {first!r} {second!r}: both name the same configuration")
    ours, theirs = (
        {s: j.metrics[metric] for s, j in zip(c.seeds, c.jobs, strict=True)} for c in (a, b)
    )
    seeds = [seed for seed in ours if seed in theirs]
    if not seeds:
        raise LitlabError(
            f"--compare: {first} and {second} share no seed with {metric} "
            f"({first}: seeds {', '.join(a.seeds) or 'none'}; "
            f"{second}: seeds {', '.join(b.seeds) or 'none'})"
        )
    differences = [ours[seed] - theirs[seed] for seed in seeds]
    sign = 1 if mode == "max" else -1
    wins = (sum(sign * d > 0 for d in differences), sum(sign * d < 0 for d in differences))
    return Comparison(metric, mode, (first, second), (a, b), seeds, summarize(differences), wins)


def default_metric(jobs: list[Job]) -> str:
    """The metric the sweep optimized (`optimized_metric`), else validation accuracy or loss."""
    names = {name for job in jobs for name in job.metrics}
    optimized = [name for job in jobs for name in objective.objectives(job.optimized_metric)]
    for name in [*optimized, "val/acc_best", "val/loss_best"]:
        if name in names:
            return name
    killed = [f"job {job.name} {job.status}" for job in jobs if job.status.startswith("killed")]
    if killed:
        raise LitlabError(
            f"no job has finished: {'; '.join(killed)}; continue the sweep with its command "
            "and resume=auto_or_fresh hydra.sweep.dir=<sweep>"
        )
    raise LitlabError("no job has finished (no metrics.json yet); wait for the sweep")


def write_csv(jobs: list[Job], params: list[str], path: Path, front: set[str] = ()) -> Path:
    """One row per job (in the given order): its status (`pareto` on a multi-objective search's
    front), swept parameters, then every metric."""
    metrics = sorted({name for job in jobs for name in job.metrics})
    rows = [["job", "status", *params, *metrics]]
    for job in jobs:
        row = [job.params.get(key, "") for key in params]
        status = "pareto" if job.name in front else job.status
        rows.append([job.name, status, *row, *(job.metrics.get(m, "") for m in metrics)])
    return _write_rows(rows, path)


STATS = ["n", "mean", "std", "ci95_low", "ci95_high", "min", "max"]


def write_config_csv(configs: list[Config], params: list[str], metric: str, path: Path) -> Path:
    """One row per configuration (in the given order): its swept parameters, `metric` over its
    seeds (`STATS`), which seeds and jobs count, and the jobs that did not log it."""
    rows = [[*params, "metric", *STATS, "seeds", "jobs", "missing"]]
    for config in configs:
        s = config.stats
        values = [s.n, s.mean, s.std, s.low, s.high, s.min, s.max] if s else [0]
        values = [_cell(v) for v in values] + [""] * (len(STATS) - len(values))
        names = [" ".join(config.seeds), " ".join(job.name for job in config.jobs)]
        missing = " ".join(job.name for job in config.missing)
        rows.append([*(config.params.get(p, "") for p in params), metric, *values, *names, missing])
    return _write_rows(rows, path)


def _cell(value: float) -> float | str:
    """A number for the CSV; empty where there is none (the spread of one seed)."""
    return "" if isinstance(value, float) and math.isnan(value) else value


def _write_rows(rows: list[list], path: Path) -> Path:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return atomic_write(path, text.getvalue())


def _x_axis(ax, values: list[str | None]) -> list[float]:
    """Where each value of a parameter goes on `ax`: a numeric axis (log when it spans a decade
    or more), else one column per value."""
    numbers = [number(v) for v in values]
    if all(n is not None for n in numbers):
        positive = [n for n in numbers if n > 0]
        if positive and len(positive) == len(numbers) and max(positive) >= 10 * min(positive):
            ax.set_xscale("log")
        return numbers
    categories = list(dict.fromkeys(str(v) for v in values))
    ax.set_xticks(range(len(categories)), categories)
    return [categories.index(str(v)) for v in values]


def _save(fig, path: Path) -> Path:
    with replacing(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    return path


def pareto_front(points: dict[str, list[float]], modes: list[str]) -> set[str]:
    """The names of the `points` (name -> one value per objective) that no other point beats
    on every objective (each objective "max" or "min", as `modes` say)."""
    signs = [1 if mode == "max" else -1 for mode in modes]

    def beats(a, b) -> bool:
        pairs = [(s * x, s * y) for x, y, s in zip(a, b, signs, strict=True)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    return {n for n, p in points.items() if not any(beats(q, p) for q in points.values())}


def plot_front(points: dict[str, list[float]], metrics: list[str], path: Path) -> Path:
    """Two objectives of each job against each other, the Pareto front marked and joined."""
    from matplotlib.figure import Figure

    front = pareto_front(points, [objective.mode(m) for m in metrics])
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    rest = [p for n, p in points.items() if n not in front]
    ax.scatter([p[0] for p in rest], [p[1] for p in rest], color="0.6", label="dominated")
    best = sorted(points[n] for n in front)
    ax.plot([p[0] for p in best], [p[1] for p in best], "o-", color="C3", label="Pareto front")
    for name in front:
        ax.annotate(name, points[name], textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(metrics[0])
    ax.set_ylabel(metrics[1])
    ax.set_title(f"{len(front)} of {len(points)} jobs on the Pareto front")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot(jobs: list[Job], param: str, metric: str, path: Path) -> Path:
    """`metric` of each job against one swept parameter."""
    from matplotlib.figure import Figure  # no pyplot: no backend to pick, nothing global

    done = [job for job in jobs if scored(job, metric)]
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.scatter(
        _x_axis(ax, [job.params.get(param) for job in done]), [j.metrics[metric] for j in done]
    )
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by {param} ({len(done)} jobs)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_means(
    configs: list[Config], param: str, params: list[str], metric: str, path: Path
) -> Path:
    """The mean of `metric` over seeds, its 95% interval as error bars, against one swept
    parameter: one line per setting of the other swept `params`, each nudged sideways so that
    their bars do not hide one another."""
    from matplotlib.figure import Figure
    from matplotlib.transforms import ScaledTranslation

    done = [config for config in configs if config.stats]
    done.sort(key=lambda config: min((job.name for job in config.jobs), key=_natural))
    values = [config.params.get(param) for config in done]  # in the sweep's order
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    xs = _x_axis(ax, values)
    others = [key for key in params if key != param]
    lines: dict[str, list[tuple[float, Summary]]] = {}
    for x, config in zip(xs, done, strict=True):
        label = " ".join(f"{key}={config.params.get(key)}" for key in others)
        lines.setdefault(label, []).append((x, config.stats))
    step = min(0.06, 0.3 / len(lines))  # inches between neighbouring lines
    for i, (label, points) in enumerate(lines.items()):
        points.sort(key=lambda point: point[0])
        half = [(s.high - s.low) / 2 for _, s in points]  # the interval is symmetric
        bars = ax.errorbar(
            [x for x, _ in points],
            [s.mean for _, s in points],
            yerr=[0.0 if math.isnan(h) else h for h in half],  # one seed: no interval
            fmt="o-" if all(number(v) is not None for v in values) else "o",  # a trend, or not
            capsize=3,
            label=label or None,
        )
        nudge = ScaledTranslation((i - (len(lines) - 1) / 2) * step, 0, fig.dpi_scale_trans)
        for artist in bars.get_children():  # after the axes took in the data where it lies
            artist.set_transform(artist.get_transform() + nudge)
    if 1 < len(lines) <= 10:
        ax.legend(fontsize="small")
    ax.set_xlabel(param)
    ax.set_ylabel(f"mean {metric}")
    ax.set_title(f"{metric} by {param}: mean and 95% interval over seeds", fontsize="medium")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def make_report(
    multirun_dir: Path,
    metric: str | None = None,
    mode: str | None = None,
    compare: tuple[str, str] | None = None,
    trust_run: bool = False,
) -> Report:
    """Read a sweep, rank its jobs by `metric` (by default the one it optimized), and write
    `report.csv` and `report_<param>.png` into `multirun_dir`. A sweep over `seed` is ranked
    by configuration; `compare` names two (e.g. `("model.optimizer.lr=0.01",
    "model.optimizer.lr=0.1")`) to set side by side over their seeds (`Report.comparison`).
    A mistake is refused before anything is written."""
    multirun_dir = Path(multirun_dir)
    jobs = read_jobs(multirun_dir, trust_run)
    metric = metric or default_metric(jobs)
    if not any(metric in job.metrics for job in jobs):  # a pruned trial's count as logged
        known = sorted({name for job in jobs for name in job.metrics})
        raise LitlabError(f"no job logged {metric}; choose one of {', '.join(known) or 'none'}")
    mode = mode or objective.mode(metric)
    if mode not in ("min", "max"):
        raise LitlabError(f"mode={mode} must be min or max")
    params = swept(jobs)
    jobs = ranked(jobs, metric, mode)
    configs = configurations(jobs, metric, mode)
    comparison = paired(configs, *compare, metric, mode) if compare else None
    report = Report(
        metric, mode, params, jobs, configs, multirun_dir / "report.csv", [], comparison
    )
    for param in report.config_params:
        path = multirun_dir / f"report_{param.replace('/', '_')}.png"
        if report.by_seed:
            report.plots.append(plot_means(configs, param, report.config_params, metric, path))
        else:
            report.plots.append(plot(jobs, param, metric, path))
    report.objectives = multi_objective(jobs)
    if report.objectives:
        finished = [job for job in jobs if all(scored(job, m) for m in report.objectives)]
        points = {job.name: [job.metrics[m] for m in report.objectives] for job in finished}
        report.front = pareto_front(points, [objective.mode(m) for m in report.objectives])
        if len(report.objectives) == 2:
            path = plot_front(points, report.objectives, multirun_dir / "report_pareto.png")
            report.plots.append(path)
    if report.by_seed:
        write_config_csv(configs, report.config_params, metric, report.csv)
    else:
        write_csv(jobs, params, report.csv, report.front)
    return report


def multi_objective(jobs: list[Job]) -> list[str]:
    """The metrics of a multi-objective search its jobs ran for; none for another sweep."""
    for job in jobs:
        if job.optimized_metric and len(job.optimized_metric) > 1:
            return job.optimized_metric
    return []
