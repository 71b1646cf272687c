"""`make bench`: every benchmark, each rewriting its section of docs/benchmarks.md."""

import epoch_time
import input_pipeline

if __name__ == "__main__":
    for benchmark in (input_pipeline, epoch_time):
        benchmark.main()
