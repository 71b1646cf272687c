"""`make bench`: every benchmark, each rewriting its section of docs/benchmarks.md."""

import article_accuracy
import compile
import epoch_time
import input_pipeline
import seed_cnn_speed
import text_accuracy
import text_pipeline
import vae

if __name__ == "__main__":
    benchmarks = (input_pipeline, epoch_time, seed_cnn_speed, compile)
    for benchmark in (*benchmarks, article_accuracy, text_pipeline, text_accuracy, vae):
        benchmark.main()
