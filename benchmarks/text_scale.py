"""Text at scale: time to the first training step and peak memory of `litlab-train` on generated
CSV corpora of 20k, 200k and 2M rows, a first run (which tokenizes the corpus into the cache)
and a second (which memory-maps it), as ratios to the 20k-row run.

Each run is a fresh process, `model=lstm` with the same batch; its time runs from the process's
start to its first training batch, its peak RSS is the kernel's count for the whole process.
The corpora go to a temporary folder that is deleted afterwards. `--rows N [N ...]` measures
other sizes and prints the table only.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import DATA_DIR, write_section

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SIZES = (20_000, 200_000, 2_000_000)
ROWS = tuple(f"{n:,}" for n in SIZES)  # the table's row labels
REPEATS = 3  # runs of each kind a median is taken of (a first run on the largest: one)
WORDS, CLASSES, VOCABULARY = 40, 4, 50_000


def write_corpus(
    path: Path, rows: int, seed: int = 0, words: int = WORDS, prefix: str = "w"
) -> Path:
    """A CSV corpus (`text,label`) of `rows` rows of `words` words, drawn with a fixed seed from a
    Zipf-like vocabulary (`prefix` and a number); a tenth of a row's words hint at its class."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"{prefix}{i}" for i in range(VOCABULARY)])
    weights = 1 / np.arange(1, VOCABULARY + 1)
    weights /= weights.sum()
    with open(path, "w") as f:
        f.write("text,label\n")
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            labels = rng.integers(CLASSES, size=n)
            ids = rng.choice(VOCABULARY, size=(n, words), p=weights)
            ids[:, : words // 10] = labels[:, None] * 100 + rng.integers(100, size=(n, words // 10))
            text = vocabulary[ids]
            f.writelines(
                f"{' '.join(row)},c{label}\n" for row, label in zip(text, labels, strict=True)
            )
    return path


def first_step(corpus: Path, cache: Path, folder: Path) -> tuple[float, float]:
    """(seconds from start to the first training batch, peak RSS in GB) of one run."""
    stamp = folder / "first_step"
    stamp.unlink(missing_ok=True)
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "FIRST_STEP": str(stamp), "PYTHONPATH": path}
    command = [
        str(BIN / "litlab-train"),
        "data=text",
        f"data.corpus={corpus}",
        f"data.num_classes={CLASSES}",
        f"data.cache_dir={cache}",
        "model=lstm",
        f"paths.data_dir={DATA_DIR}",
        f"hydra.run.dir={folder}/run-{time.time_ns()}",
        "++trainer.max_steps=1",
        "++trainer.limit_val_batches=0",
        "callbacks.early_stopping=null",
        "test=false",
        "+callbacks.first_step._target_=startup.FirstStep",
    ]
    start = time.time()
    process = subprocess.Popen(
        command, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"litlab-train failed: {process.stderr.read().decode()[-500:]}")
    return float(stamp.read_text()) - start, usage.ru_maxrss / 2**20


def measure(sizes=SIZES) -> dict[int, dict]:
    """Per corpus size: the median time to first step and peak RSS of its first runs (the cache
    cleared before each; one on the largest corpus) and of its second runs."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="litlab-text-scale-") as folder:
        folder = Path(folder)
        for rows in sizes:
            corpus = write_corpus(folder / f"corpus-{rows}.csv", rows)
            cache = folder / f"cache-{rows}"
            first = []
            for _ in range(1 if rows == max(sizes) else REPEATS):
                shutil.rmtree(cache, ignore_errors=True)
                first.append(first_step(corpus, cache, folder))
            second = [first_step(corpus, cache, folder) for _ in range(REPEATS)]
            results[rows] = {
                "file_mb": corpus.stat().st_size / 1e6,
                "first": statistics.median(t for t, _ in first),
                "second": statistics.median(t for t, _ in second),
                "first_rss": statistics.median(m for _, m in first),
                "second_rss": statistics.median(m for _, m in second),
            }
            corpus.unlink()
            shutil.rmtree(cache)
            print(rows, results[rows], flush=True)
    return results


def table(results: dict[int, dict]) -> str:
    base = results[min(results)]
    rows = [
        f"| {n:,} | {r['file_mb']:,.0f} MB | {r['first']:.1f} s ({r['first'] / base['first']:.2f}x)"
        f" | {r['second']:.1f} s ({r['second'] / base['second']:.2f}x) | "
        f"**{r['second'] / r['first']:.3f}x** | {r['first_rss']:.2f} GB "
        f"(**{r['first_rss'] / base['first_rss']:.2f}x**) | {r['second_rss']:.2f} GB "
        f"(**{r['second_rss'] / base['second_rss']:.2f}x**) |"
        for n, r in results.items()
    ]
    return (
        "| rows | CSV | first run: to first step (vs 20k) | second run (vs 20k) | "
        "second / first | peak RSS, first run (vs 20k) | peak RSS, second run (vs 20k) |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows)
    )


class MemoryCap:
    """A cgroup whose processes may use at most `limit` bytes of memory, page cache included
    (cgroup v2's memory.max, or v1's memory.limit_in_bytes); needs root."""

    def __init__(self, limit: int):
        name = f"litlab-cap-{os.getpid()}"
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.is_file() and "memory" in v2.read_text().split():
            self.path, files = Path("/sys/fs/cgroup") / name, ("memory.max", "memory.peak")
        else:
            self.path = Path("/sys/fs/cgroup/memory") / name
            files = ("memory.limit_in_bytes", "memory.max_usage_in_bytes")
        self.limit_file, self.peak_file = files
        try:
            self.path.mkdir()
            (self.path / self.limit_file).write_text(str(limit))
        except OSError as err:
            raise RuntimeError(
                f"cannot make a memory-capped cgroup at {self.path} ({err.strerror}): run as "
                "root on a machine with the memory controller"
            ) from err

    def command(self, command: list[str]) -> list[str]:
        """`command`, started inside the cgroup."""
        join = f'echo $$ > {self.path}/cgroup.procs && exec "$@"'
        return ["sh", "-c", join, "sh", *command]

    def peak(self) -> int:
        return int((self.path / self.peak_file).read_text())

    def oom_kills(self) -> int:
        """Processes the kernel killed for going past the cap."""
        events = self.path / (
            "memory.events" if self.limit_file == "memory.max" else "memory.oom_control"
        )
        counts = dict(line.split() for line in events.read_text().splitlines())
        return int(counts.get("oom_kill", 0))

    def remove(self) -> None:
        self.path.rmdir()


def past_ram(cap_gb: float, corpus_gb: float) -> dict:
    """One epoch of `litlab-train` on a generated corpus of `corpus_gb` GB, its whole process
    capped at `cap_gb` GB: whether it finished, its cgroup's peak and the times."""
    cap = MemoryCap(int(cap_gb * 2**30))
    try:
        with tempfile.TemporaryDirectory(prefix="litlab-past-ram-") as folder:
            folder = Path(folder)
            # long words: more bytes for the tokenizer's time (a row is about 474 bytes)
            rows = int(corpus_gb * 2**30 / 474)
            corpus = write_corpus(folder / "corpus.csv", rows, prefix="wordform")
            command = [
                str(BIN / "litlab-train"),
                "data=text",
                f"data.corpus={corpus}",
                f"data.num_classes={CLASSES}",
                f"data.cache_dir={folder}/cache",
                "data.max_len=16",
                "data.batch_size=1024",
                "data.eval_batch_size=4096",
                "model=rnn",
                "model.net.embedding_dim=8",
                "model.net.hidden_size=8",
                f"paths.data_dir={DATA_DIR}",
                f"hydra.run.dir={folder}/run",
                "trainer.max_epochs=1",
                "callbacks.early_stopping=null",
                "test=false",
            ]
            start = time.time()
            done = subprocess.run(cap.command(command), capture_output=True, text=True)
            result = {
                "corpus_gb": corpus.stat().st_size / 2**30,
                "cache_gb": sum(f.stat().st_size for f in (folder / "cache").rglob("*")) / 2**30,
                "rows": rows,
                "cap_gb": cap_gb,
                "peak_gb": cap.peak() / 2**30,
                "oom_kills": cap.oom_kills(),
                "seconds": time.time() - start,
                "returncode": done.returncode,
                "tail": done.stderr[-300:],
            }
    finally:
        cap.remove()
    print(result, flush=True)
    return result


def main() -> dict:
    results = measure()
    largest, base = results[max(results)], results[min(results)]
    write_section(
        "text_scale",
        "Text at scale: a tokenized corpus kept and memory-mapped",
        f"{table(results)}\n\n"
        f"Generated CSV corpora ({WORDS} words a row, {CLASSES} classes, a fixed seed), "
        "`litlab-train data=text model=lstm` (batch 32, max_len 400), each run a fresh process "
        "timed from its start to its first training batch; peak RSS is the whole process's; "
        f"each figure the median of {REPEATS} runs (one first run on the largest corpus). "
        "The first run reads the corpus, fits the tokenizer and encodes it into "
        "`data.cache_dir` (three streamed passes); the second finds the entry by the corpus's "
        "sha256 and its settings and memory-maps it. Targets: the second run on the largest "
        f"corpus reaches its first step in at most 0.1x the first run's time (here "
        f"{largest['second'] / largest['first']:.3f}x), and its peak RSS is at most 1.5x the "
        f"smallest corpus's ({largest['first_rss'] / base['first_rss']:.2f}x first run, "
        f"{largest['second_rss'] / base['second_rss']:.2f}x second run).",
    )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", help="corpus sizes; print the table only")
    parser.add_argument(
        "--past-ram",
        type=float,
        nargs=2,
        metavar=("CAP_GB", "CORPUS_GB"),
        help="train an epoch on a corpus of CORPUS_GB under a memory cap of CAP_GB (as root)",
    )
    args = parser.parse_args()
    if args.past_ram:
        past_ram(*args.past_ram)
    elif args.rows:
        print(table(measure(args.rows)))
    else:
        main()
