"""`make bench`: every benchmark, each rewriting its section of docs/benchmarks.md."""

import epoch_time
import input_pipeline
import text_accuracy
import text_pipeline
import vae

if __name__ == "__main__":
    for benchmark in (input_pipeline, epoch_time, text_pipeline, text_accuracy, vae):
        benchmark.main()
