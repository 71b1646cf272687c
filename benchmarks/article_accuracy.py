"""The article's CNN (`experiment=seed_cnn`, what `make train` runs) over several seeds.

Each seed sets the 55k/5k split and the initialisation; the recipe is the article's own, not
tuned here. Every run is a real `litlab-train` process; where the CPU has AVX-512, each seed
also runs with torch and oneDNN held to their AVX2 kernels, as on AVX2-only machines, so the
spread covers both kinds of CPU. The test suite's threshold (tests/test_article.py) is set
below the lowest run of this table.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from report import DATA_DIR, write_section

SEEDS = (101, 102, 103, 104, 105)
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
AVX2_ROW = "AVX2 (`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`)"
ROWS = ("native", AVX2_ROW)
TRAIN = Path(sys.executable).parent / "litlab-train"


def has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def run(seed: int, env: dict[str, str]) -> dict[str, float]:
    out = tempfile.mkdtemp()
    subprocess.run(
        [
            str(TRAIN),
            "experiment=seed_cnn",
            f"seed={seed}",
            f"paths.data_dir={DATA_DIR}",
            f"hydra.run.dir={out}",
            "callbacks.rich_progress_bar=null",
        ],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    return json.loads((Path(out) / "metrics.json").read_text())["metrics"]


def summary(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} | {min(values):.4f} | {max(values):.4f}"


def main() -> dict:
    kernels = {"native": {}}
    if has_avx512():
        kernels[AVX2_ROW] = AVX2
    rows, everything = [], []
    for name, env in kernels.items():
        runs = [run(seed, env) for seed in SEEDS]
        tests = [r["test/acc"] for r in runs]
        everything += tests
        per_seed = ", ".join(f"{t:.4f}" for t in tests)
        rows.append(
            f"| {name} | {summary([r['val/acc_best'] for r in runs])} | {summary(tests)} "
            f"| {per_seed} |"
        )
    body = f"""\
| kernels | val acc (best epoch) mean | min | max | test acc mean | min | max | test acc per seed |
|---|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}

Seeds {", ".join(map(str, SEEDS))}, 5 epochs, batch 32, Adam 1e-3, tested at the best
validation epoch. Lowest test accuracy of all runs: {min(everything):.4f}.
"""
    write_section(
        "article_accuracy", "The article's CNN over seeds: what `make train` reaches", body
    )
    return {"min": min(everything), "mean": statistics.mean(everything)}


if __name__ == "__main__":
    main()
