"""`make bench`: every benchmark, each rewriting its section of docs/benchmarks.md.

A benchmark that cannot run here (missing data, a Keras Python that does not start) says why
in one `error:` line; the others still run and write their sections, and the exit status is 1.
"""

import sys

import article_accuracy
import compile
import epoch_time
import input_pipeline
import seed_cnn_speed
import speedrun
import startup
import sweeps
import text_accuracy
import text_pipeline
import text_scale
import triton_aot
import vae

from litlab.errors import first_line

# The timed ones first, while nothing else has warmed or loaded the machine.
BENCHMARKS = (
    startup,
    input_pipeline,
    epoch_time,
    seed_cnn_speed,
    compile,
    speedrun,
    text_pipeline,
    text_scale,
    article_accuracy,
    text_accuracy,
    vae,
    sweeps,
    triton_aot,  # static: the compiler's figures
)


def run_all(benchmarks=BENCHMARKS) -> int:
    """Run each benchmark; the exit status: 1 if any could not run."""
    failed = []
    for benchmark in benchmarks:
        try:
            benchmark.main()
        except Exception as err:  # say why and go on with the rest
            failed.append(benchmark.__name__)
            print(f"error: {benchmark.__name__}: {first_line(err)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_all())
