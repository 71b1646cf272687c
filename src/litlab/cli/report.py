"""litlab-report: rank the jobs of a sweep, or its configurations over seeds; write report.csv
and a plot per swept parameter; compare two configurations seed by seed."""

import argparse
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from litlab.cli import user_errors
from litlab.sweeps.report import Report, make_report, scored


def table(report: Report) -> Table:
    """The ranked jobs: swept parameters, the ranking metric, then the test metrics (without
    the counts of what was tested); a job that is not ranked shows its status."""
    others = sorted({name for job in report.jobs for name in job.metrics} - {report.metric})
    others = [m for m in others if m.startswith("test/") and not m.startswith("test/samples")]
    out = Table(title=f"{len(report.jobs)} jobs ranked by {report.metric} ({report.mode})")
    if report.front:
        out.caption = f"* on the Pareto front of {', '.join(report.objectives)}"
    for column in ["#", "job", *report.params]:
        out.add_column(column)
    for column in [report.metric, *others]:
        out.add_column(column, justify="right")
    for i, job in enumerate(report.jobs, 1):
        values = [
            f"{job.metrics[m]:.4f}" if m in job.metrics else "-" for m in [report.metric, *others]
        ]
        rank = str(i) if scored(job, report.metric) else job.status.replace("finished", "-")
        rank += " *" if job.name in report.front else ""  # on the Pareto front
        out.add_row(rank, job.name, *(job.params.get(p, "") for p in report.params), *values)
    return out


def seed_table(report: Report) -> Table:
    """The ranked configurations: swept parameters but seed, then the metric over the seeds:
    n, the mean, the half-width of its 95% interval, standard deviation, min and max."""
    seeds = {seed for config in report.configs for seed in config.seeds}
    out = Table(
        title=f"{len(report.configs)} configurations over {len(seeds)} seeds, "
        f"ranked by mean {report.metric} ({report.mode})"
    )
    for column in ["#", *report.config_params]:
        out.add_column(column)
    for column in ["n", "mean", "± 95%", "std", "min", "max"]:
        out.add_column(column, justify="right")
    for i, config in enumerate(report.configs, 1):
        params = [config.params.get(p, "") for p in report.config_params]
        s = config.stats
        if s is None:
            out.add_row("-", *params, "0", *["-"] * 5)
            continue
        numbers = [s.mean, s.high - s.mean, s.std, s.min, s.max]
        out.add_row(
            str(i), *params, str(s.n), *("-" if math.isnan(v) else f"{v:.4f}" for v in numbers)
        )
    return out


def left_out(report: Report) -> list[str]:
    """One line per job that n does not count."""
    lines = []
    for job in (job for config in report.configs for job in config.missing):
        params = " ".join(f"{key}={job.params.get(key, '')}" for key in report.params)
        lines.append(f"job {job.name} ({params}): {job.status}, no {report.metric}; not in n")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="litlab-report", description=__doc__)
    parser.add_argument("multirun_dir", type=Path, help="a sweep's logs/train/multiruns/<dir>")
    parser.add_argument(
        "--metric", help="rank by this metric (default: the sweep's optimized_metric)"
    )
    parser.add_argument(
        "--mode",
        choices=["max", "min"],
        help="best is highest or lowest (default: the metric's own, min for losses)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="compare two configurations over the seeds they share; name each by key=value, "
        "or by several pairs in one quoted argument ('a=1 b=2') where one pair fits several",
    )
    parser.add_argument(
        "--trust-run",
        action="store_true",
        help="read a sweep from elsewhere whose configs name classes beyond those litlab trusts",
    )
    args = parser.parse_args(argv)
    with user_errors():
        report = make_report(
            args.multirun_dir, args.metric, args.mode, args.compare, args.trust_run
        )
    if report.by_seed:
        Console().print(seed_table(report))
        for line in left_out(report):
            print(line)
    else:
        Console().print(table(report))
    if report.comparison:
        print(report.comparison.text())
    for path in [report.csv, *report.plots]:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
