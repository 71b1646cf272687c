"""litlab-report: rank the jobs of a sweep; write report.csv and a plot per swept parameter."""

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from litlab.cli import user_errors
from litlab.report import Report, make_report


def table(report: Report) -> Table:
    """The ranked jobs: swept parameters, the ranking metric, then the test metrics."""
    others = sorted({name for job in report.jobs for name in job.metrics} - {report.metric})
    others = [m for m in others if m.startswith("test/")]
    out = Table(title=f"{len(report.jobs)} jobs ranked by {report.metric} ({report.mode})")
    for column in ["#", "job", *report.params]:
        out.add_column(column)
    for column in [report.metric, *others]:
        out.add_column(column, justify="right")
    for i, job in enumerate(report.jobs, 1):
        values = [
            f"{job.metrics[m]:.4f}" if m in job.metrics else "-" for m in [report.metric, *others]
        ]
        rank = str(i) if report.metric in job.metrics else "-"
        out.add_row(rank, job.name, *(job.params.get(p, "") for p in report.params), *values)
    return out


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
    args = parser.parse_args(argv)
    with user_errors():
        report = make_report(args.multirun_dir, args.metric, args.mode)
    Console().print(table(report))
    for path in [report.csv, *report.plots]:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
